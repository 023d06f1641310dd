"""Qwen3: the generic decoder with RMSNorm on each q/k head before rope (no q/k/v bias)."""
from litevllm.plugin_api import LiteAttention, LiteForCausalLM, RMSNorm

from litevllm_qwen.qwen2 import qwen_sliding_window


class Qwen3Attention(LiteAttention):
    def __init__(self, config, layer_idx, ctx, prefix):
        super().__init__(config, layer_idx, ctx, prefix)
        eps = getattr(config, "rms_norm_eps", 1e-6)
        self.q_norm = RMSNorm(self.head_dim, eps, ctx)
        self.k_norm = RMSNorm(self.head_dim, eps, ctx)

    def qk_norms(self):
        return self.q_norm, self.k_norm  # differs: q and k RMS-normalised per head before rope

    def sliding_window(self, config, layer_idx):
        return qwen_sliding_window(config, layer_idx)  # differs: only with use_sliding_window


class Qwen3ForCausalLM(LiteForCausalLM):
    attention_cls = Qwen3Attention
