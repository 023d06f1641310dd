"""Gemma 2: Gemma with soft-capped logits, alternating sliding-window / global attention,
a ``query_pre_attn_scalar`` attention scale and "sandwich" norms around attention and MLP.

Both soft-caps need no code here: the generic decoder passes ``attn_logit_softcapping`` to the
attention spec and applies ``final_logit_softcapping`` in ``compute_logits``.
"""
from litevllm.plugin_api import LiteAttention, RMSNorm

from litevllm_gemma.gemma import GemmaDecoderLayer, GemmaForCausalLM


def is_sliding(config, layer_idx: int) -> bool:
    """transformers 5 lists ``layer_types``; older configs mean even layers are sliding."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return layer_types[layer_idx] == "sliding_attention"
    return layer_idx % 2 == 0


class Gemma2Attention(LiteAttention):
    def scale(self, config):
        # differs: queries are scaled by query_pre_attn_scalar ** -0.5, not head_dim ** -0.5
        return config.query_pre_attn_scalar ** -0.5

    def sliding_window(self, config, layer_idx):
        # differs: local and global layers alternate. HF masks key k for query q unless
        # q - k < window (masking_utils.sliding_window_overlay), which is our contract as is.
        return getattr(config, "sliding_window", None) if is_sliding(config, layer_idx) else None


class Gemma2DecoderLayer(GemmaDecoderLayer):
    attention_cls = Gemma2Attention

    def __init__(self, config, layer_idx, ctx, prefix):
        super().__init__(config, layer_idx, ctx, prefix)
        # differs: two more norms, around the MLP (4 per layer)
        eps = getattr(config, "rms_norm_eps", 1e-6)
        self.pre_feedforward_layernorm = RMSNorm(config.hidden_size, eps, ctx, self.norm_offset)
        self.post_feedforward_layernorm = RMSNorm(config.hidden_size, eps, ctx, self.norm_offset)

    def forward(self, positions, hidden, residual, kv_cache, meta):
        # differs: post_attention_layernorm norms the attention output before the residual add;
        # pre_feedforward_layernorm takes the add instead; post_feedforward_layernorm the MLP out
        if residual is None:
            residual, hidden = hidden, self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.post_attention_layernorm(self.self_attn(positions, hidden, kv_cache, meta))
        hidden, residual = self.pre_feedforward_layernorm(hidden, residual)
        return self.post_feedforward_layernorm(self.mlp(hidden)), residual


class Gemma2ForCausalLM(GemmaForCausalLM):
    layer_cls = Gemma2DecoderLayer
