"""Mistral: the generic decoder with sliding-window attention (taken from config.sliding_window)."""
from litevllm.plugin_api import LiteAttention, LiteForCausalLM


class MistralAttention(LiteAttention):
    def sliding_window(self, config, layer_idx):
        # differs: one window for every layer; `None` in config means full attention
        return getattr(config, "sliding_window", None)


class MistralForCausalLM(LiteForCausalLM):
    attention_cls = MistralAttention
