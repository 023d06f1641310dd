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


def _attend_through(attn, ctx, hidden, rotary_stores_kv):
    """One 3-token prompt through ``attn`` over the torch backend (its ``rotary_stores_kv``
    set as given): (output, k cache, v cache, the specs forward saw)."""
    from litevllm.attention.backend import AttentionMetadata
    from litevllm.attention.torch_backend import TorchAttentionBackend
    backend = TorchAttentionBackend(torch.device("cpu"), torch.float32, 4)
    backend.rotary_stores_kv = rotary_stores_kv
    specs, forward = [], backend.forward
    backend.forward = lambda spec, *a, **kw: specs.append(spec) or forward(spec, *a, **kw)
    attn.attn = backend
    cache = backend.allocate_kv_cache(4, attn.num_kv_heads, attn.head_dim)
    meta = AttentionMetadata(slot_mapping=torch.tensor([5, 6, 7]),
                             query_start_loc=torch.tensor([0, 3], dtype=torch.int32),
                             seq_lens=torch.tensor([3], dtype=torch.int32),
                             block_tables=torch.tensor([[1, 2]], dtype=torch.int32),
                             max_query_len=3, max_seq_len=3, num_seqs=1, is_decode=False,
                             query_lens_cpu=[3], seq_lens_cpu=[3])
    torch.manual_seed(1)
    x = torch.randn(3, hidden)
    out = attn.forward(torch.arange(3), x, cache, meta)
    return out, cache[0].clone(), cache[1].clone(), specs


@pytest.mark.parametrize("cls", [LiteAttention, NormedAttention])
def test_rotary_op_stores_kv_when_the_backend_allows(cls):
    """With ``rotary_stores_kv`` the rotary op stores k and v (the backend is told by
    ``spec.kv_stored`` and skips its store): the same cache and output as the two-op path; a
    replaced rotary_emb keeps the backend's store."""
    config = tiny_config("LlamaForCausalLM")
    ctx = model_context("cpu")
    attn = cls(config, 0, ctx, "l0")
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.2)
    two_ops = _attend_through(attn, ctx, config.hidden_size, False)
    fused = _attend_through(attn, ctx, config.hidden_size, True)
    assert [s.kv_stored for s in two_ops[3]] == [False]
    assert [s.kv_stored for s in fused[3]] == [True]
    assert fused[1][1:].abs().sum() > 0  # blocks 1 and 2 hold the prompt
    for got, want in zip(fused[:3], two_ops[:3]):
        assert torch.equal(got, want)
    if cls is LiteAttention:  # replaced after a fused forward on the same backend
        backend = attn.attn
        attn.rotary_emb = PlainRope()  # (positions, q, k) only
        assert attn.rotary_stores_kv() is False
        attn.forward(torch.arange(3), torch.randn(3, config.hidden_size),
                     backend.allocate_kv_cache(4, attn.num_kv_heads, attn.head_dim),
                     _prompt_meta())
        assert attn._stored_spec[3] is None


def _prompt_meta():
    from litevllm.attention.backend import AttentionMetadata
    return AttentionMetadata(slot_mapping=torch.tensor([5, 6, 7]),
                             query_start_loc=torch.tensor([0, 3], dtype=torch.int32),
                             seq_lens=torch.tensor([3], dtype=torch.int32),
                             block_tables=torch.tensor([[1, 2]], dtype=torch.int32),
                             max_query_len=3, max_seq_len=3, num_seqs=1, is_decode=False,
                             query_lens_cpu=[3], seq_lens_cpu=[3])


def test_rotary_store_opt_in_is_read_from_the_forward_class():
    """A subclass that replaces ``forward`` or the cache layout does not inherit the opt-in;
    one that replaces only other methods does; an instance can turn it off; a patched
    rotary_emb.forward keeps the two-op path."""
    from litevllm.attention.backend import rotary_store_allowed as rotary_stores_kv
    from litevllm.attention.torch_backend import TorchAttentionBackend

    class Tweaked(TorchAttentionBackend):
        def prepare(self, meta):
            return meta

    class OwnForward(TorchAttentionBackend):
        def forward(self, spec, q, k, v, kv_cache, meta, out=None):
            return super().forward(spec, q, k, v, kv_cache, meta, out)

    class OwnForwardOptedIn(OwnForward):
        rotary_stores_kv = True

        def forward(self, spec, q, k, v, kv_cache, meta, out=None):
            return super().forward(spec, q, k, v, kv_cache, meta, out)

    class OwnLayout(TorchAttentionBackend):
        def kv_cache_shape(self, num_blocks, num_kv_heads, head_dim):
            return (num_blocks, 2, self.block_size, num_kv_heads, head_dim)

    def make(cls):
        return cls(torch.device("cpu"), torch.float32, 4)
    assert rotary_stores_kv(make(TorchAttentionBackend)) and rotary_stores_kv(make(Tweaked))
    assert rotary_stores_kv(make(OwnForwardOptedIn))
    assert not rotary_stores_kv(make(OwnForward)) and not rotary_stores_kv(make(OwnLayout))
    off = make(TorchAttentionBackend)
    off.rotary_stores_kv = False
    assert not rotary_stores_kv(off)

    config = tiny_config("LlamaForCausalLM")
    attn = LiteAttention(config, 0, model_context("cpu"), "l0")
    assert attn.rotary_stores_kv()
    attn.rotary_emb.forward = lambda positions, q, k, *norms: (q, k)
    assert not attn.rotary_stores_kv()
