"""Qwen2 / Qwen2.5: the generic decoder with a q/k/v bias and Qwen's sliding-window rule."""
from litevllm.plugin_api import LiteAttention, LiteForCausalLM


def qwen_sliding_window(config, layer_idx: int) -> int | None:
    """HF's rule: Qwen configs carry ``sliding_window`` but use it only when
    ``use_sliding_window`` is set, and then on the layers ``layer_types`` marks (configs without
    ``layer_types``: layers from ``max_window_layers`` on)."""
    window = getattr(config, "sliding_window", None)
    if not getattr(config, "use_sliding_window", False) or not window:
        return None
    types = getattr(config, "layer_types", None)
    if types:
        return window if types[layer_idx] == "sliding_attention" else None
    return window if layer_idx >= getattr(config, "max_window_layers", 0) else None


class Qwen2Attention(LiteAttention):
    def qkv_bias(self, config):
        return True  # differs: q/k/v always carry a bias

    def o_bias(self, config):
        return False  # differs: o_proj never does

    def sliding_window(self, config, layer_idx):
        return qwen_sliding_window(config, layer_idx)  # differs: only with use_sliding_window


class Qwen2ForCausalLM(LiteForCausalLM):
    attention_cls = Qwen2Attention
