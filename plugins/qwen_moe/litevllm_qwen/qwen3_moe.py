"""Qwen3-MoE: Qwen3 attention (q/k norm), sparse MoE blocks without a shared expert."""
from litevllm_qwen.qwen2_moe import Qwen2MoeForCausalLM
from litevllm_qwen.qwen3 import Qwen3Attention


class Qwen3MoeAttention(Qwen3Attention):
    def sliding_window(self, config, layer_idx):
        # differs: HF applies the window to every layer (when use_sliding_window is set)
        if not getattr(config, "use_sliding_window", False):
            return None
        return getattr(config, "sliding_window", None) or None


class Qwen3MoeForCausalLM(Qwen2MoeForCausalLM):
    attention_cls = Qwen3MoeAttention  # the MoE block has no shared expert: config has none
