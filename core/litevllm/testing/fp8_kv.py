"""An independent reference for ``kv_cache_dtype="fp8"``: transformers with its attention fed
K/V through the fp8 round trip a float8 e4m3 cache makes (``x / scale`` saturated to +-448,
cast by torch, times ``scale``), per layer. No litevllm code is involved::

    hf = hf_with_fp8_kv(path, scales={0: (k_scale, v_scale)})
    hf(ids).logits
"""
from __future__ import annotations

_NAME = "litevllm_fp8_kv_reference"


def fp8_round_trip(x, scale: float = 1.0):
    """``x`` as a float8 e4m3 cache with this scale gives it back, in float32."""
    import torch
    top = torch.finfo(torch.float8_e4m3fn).max
    return (x.float() / scale).clamp(-top, top).to(torch.float8_e4m3fn).float() * scale


def _attention(module, query, key, value, *args, **kwargs):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    k_scale, v_scale = getattr(module.config, "_fp8_kv_scales", {}).get(module.layer_idx,
                                                                       (1.0, 1.0))
    key = fp8_round_trip(key, k_scale).to(query.dtype)
    value = fp8_round_trip(value, v_scale).to(query.dtype)
    with sdpa_kernel(SDPBackend.MATH):  # plain float32 products, as eager attention
        return sdpa_attention_forward(module, query, key, value, *args, **kwargs)


def hf_with_fp8_kv(path, device: str = "cpu", scales: dict | None = None):
    """The checkpoint at ``path`` as a float32 transformers model whose attention sees fp8
    round-tripped K/V; ``scales`` maps a layer index to (k_scale, v_scale), default 1.0."""
    import torch
    from transformers import AttentionInterface, AutoModelForCausalLM
    AttentionInterface.register(_NAME, _attention)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                 attn_implementation=_NAME)
    model.config._fp8_kv_scales = dict(scales or {})
    return model.to(device).eval()
