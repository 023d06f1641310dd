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
