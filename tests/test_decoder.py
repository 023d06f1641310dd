"""The generic decoder's extension points."""
import pytest
import torch

from litevllm.model.decoder import LiteAttention, LiteForCausalLM, LiteMLP
from litevllm.model.layers import RMSNorm
from litevllm.testing import model_context, tiny_config


class WindowAttention(LiteAttention):
    def sliding_window(self, config, layer_idx):
        return 4


class WideMLP(LiteMLP):
    pass


class Swapped(LiteForCausalLM):
    attention_cls = WindowAttention
    mlp_cls = WideMLP


def test_part_swaps_thread_into_the_generic_model():
    config = tiny_config("LlamaForCausalLM")
    with torch.device("meta"):
        model = Swapped(config, model_context("meta"))
        plain = LiteForCausalLM(config, model_context("meta"))
    layer = model.model.layers[0]
    assert isinstance(layer.self_attn, WindowAttention) and isinstance(layer.mlp, WideMLP)
    assert layer.self_attn.spec.sliding_window == 4
    assert type(plain.model.layers[0].self_attn) is LiteAttention  # the base is untouched
    assert plain.model.layers[0].self_attn.spec.sliding_window is None


class SinkAttention(LiteAttention):
    """A subclass with a parameter of its own (as attention sinks would be)."""
    def __init__(self, config, layer_idx, ctx, prefix):
        super().__init__(config, layer_idx, ctx, prefix)
        self.sinks = torch.nn.Parameter(torch.zeros(self.num_heads), requires_grad=False)


class WithSinks(LiteForCausalLM):
    attention_cls = SinkAttention


def test_a_subclass_parameter_on_the_attention_module_is_loaded():
    """LiteAttention.load_shard (the fp8 KV scales) receives every tensor named after the
    module: its subclasses' own parameters must still be filled, not dropped."""
    from litevllm.model.loader import load_weights
    config = tiny_config("LlamaForCausalLM")
    model = WithSinks(config, model_context("cpu"))
    state = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    load_weights(model, state.items())
    sinks = model.model.layers[0].self_attn.sinks
    assert torch.equal(sinks, state["model.layers.0.self_attn.sinks"])


class PlainRope(torch.nn.Module):
    """A replacement ``rotary_emb`` written for the (positions, q, k) call (docs/plugins.md)."""
    def forward(self, positions, q, k):
        return q + 1, k + 2


class NormedAttention(LiteAttention):
    def __init__(self, config, layer_idx, ctx, prefix):
        super().__init__(config, layer_idx, ctx, prefix)
        self.q_norm = RMSNorm(self.head_dim, 1e-6, ctx)
        self.k_norm = RMSNorm(self.head_dim, 1e-6, ctx)

    def qk_norms(self):
        return self.q_norm, self.k_norm


def _attention_inputs(attn, hidden):
    """Run attn.forward with the attention backend replaced by one returning (q, k, v)."""
    seen = {}

    def backend(spec, q, k, v, kv_cache, meta):
        seen.update(q=q.clone(), k=k.clone(), v=v.clone())
        return q.flatten(1)
    attn.attn = type("Stub", (), {"forward": staticmethod(backend)})()
    for p in attn.qkv_proj.parameters():  # allocated, not initialised: NaN would fail equal()
        torch.nn.init.normal_(p, std=0.02)
    x, positions = torch.randn(3, hidden), torch.tensor([0, 5, 9])
    attn.forward(positions, x, None, None)
    q, k, v = attn.qkv_proj(x).split([attn.q_size, attn.kv_size, attn.kv_size], dim=-1)
    return seen, positions, q, k, v


def test_rotary_emb_replacement_and_qk_norms():
    """A replaced rotary_emb still gets the (positions, q, k) call when there are no q/k
    norms; with norms (Qwen3) the rotary op gets them: rms_norm then rope, v untouched."""
    config = tiny_config("LlamaForCausalLM")
    ctx = model_context("cpu")
    attn = LiteAttention(config, 0, ctx, "l0")
    attn.rotary_emb = PlainRope()
    seen, _, q, k, _ = _attention_inputs(attn, config.hidden_size)
    assert torch.equal(seen["q"].flatten(1), q + 1) and torch.equal(seen["k"].flatten(1), k + 2)

    attn = NormedAttention(config, 0, ctx, "l0")
    attn.q_norm.weight.uniform_(0.5, 1.5)
    attn.k_norm.weight.uniform_(-1.0, 1.0)
    seen, positions, q, k, v = _attention_inputs(attn, config.hidden_size)
    d, ops = attn.head_dim, ctx.ops
    nq = ops.rms_norm(q.reshape(3, -1, d), attn.q_norm.weight, 1e-6).reshape(3, -1)
    nk = ops.rms_norm(k.reshape(3, -1, d), attn.k_norm.weight, 1e-6).reshape(3, -1)
    want_q, want_k = ops.rotary_embedding(positions, nq, nk, d, attn.rotary_emb.cos_sin_cache)
    assert torch.equal(seen["q"].flatten(1), want_q) and torch.equal(seen["k"].flatten(1), want_k)
    assert torch.equal(seen["v"].flatten(1), v)
    with pytest.raises(ValueError, match="both q_norm and k_norm"):  # not silently dropped
        attn.rotary_emb(positions, q, k, attn.q_norm, None)
