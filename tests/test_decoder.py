"""The generic decoder's extension points."""
import torch

from litevllm.model.decoder import LiteAttention, LiteForCausalLM, LiteMLP
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
