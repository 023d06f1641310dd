"""Mistral: the generic decoder with sliding-window attention (taken from config.sliding_window)."""
from litevllm.plugin_api import LiteAttention, LiteDecoderLayer, LiteForCausalLM, LiteModel


class MistralAttention(LiteAttention):
    def sliding_window(self, config, layer_idx):
        # differs: Mistral's window applies to every layer; `None` in config means full attention
        return getattr(config, "sliding_window", None)


class MistralDecoderLayer(LiteDecoderLayer):
    attention_cls = MistralAttention


class MistralModel(LiteModel):
    layer_cls = MistralDecoderLayer


class MistralForCausalLM(LiteForCausalLM):
    model_cls = MistralModel
