"""Norms, rotary embeddings and gated activations; each calls the op registry."""
from __future__ import annotations

import math

import torch
from torch import nn

from litevllm.model.context import ModelContext


class RMSNorm(nn.Module):
    """RMSNorm; ``offset=1.0`` gives Gemma's ``(1 + weight)`` scaling."""

    def __init__(self, hidden: int, eps: float, ctx: ModelContext, offset: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden, dtype=ctx.dtype), requires_grad=False)
        self.eps, self.offset, self.ops = eps, offset, ctx.ops

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        return self.ops.rms_norm(x, self.weight, self.eps, residual, self.offset)


def rope_parameters(config) -> dict:
    """Rope settings from a HF config, for transformers 4 (rope_theta/rope_scaling) and 5."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    if "rope_theta" not in params:
        params = {"rope_theta": getattr(config, "rope_theta", 10000.0),
                  **(getattr(config, "rope_scaling", None) or {})}
    params.setdefault("rope_type", params.get("type", "default"))
    return params


def _llama3_inv_freq(inv_freq: torch.Tensor, p: dict) -> torch.Tensor:
    factor, low, high = p["factor"], p.get("low_freq_factor", 1.0), p.get("high_freq_factor", 4.0)
    old_len = p["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, smoothed, scaled)


def build_cos_sin_cache(rot_dim: int, max_pos: int, params: dict, max_position_embeddings: int):
    """[max_pos, rot_dim] float32: cos of each frequency, then sin."""
    base, kind = float(params["rope_theta"]), params["rope_type"]
    if kind == "dynamic" and max_pos > params.get("original_max_position_embeddings",
                                                   max_position_embeddings):
        # NTK-aware base for the longest sequence the engine will see; below the original
        # context HF leaves the base unchanged, and so do we.
        orig = params.get("original_max_position_embeddings", max_position_embeddings)
        factor = params["factor"]
        base = base * ((factor * max_pos / orig) - (factor - 1)) ** (rot_dim / (rot_dim - 2))
    inv_freq = 1.0 / (base ** (torch.arange(0, rot_dim, 2, dtype=torch.int64).float() / rot_dim))
    if kind == "llama3":
        inv_freq = _llama3_inv_freq(inv_freq, params)
    elif kind == "linear":
        inv_freq = inv_freq / params["factor"]
    elif kind not in ("default", "dynamic"):
        raise ValueError(f"rope_scaling type '{kind}' is not supported")
    freqs = torch.outer(torch.arange(max_pos, dtype=torch.float32), inv_freq)
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1)


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, config, ctx: ModelContext, rot_dim: int | None = None,
                 is_neox: bool = True):
        super().__init__()
        self.head_dim, self.is_neox, self.ops = head_dim, is_neox, ctx.ops
        cache = build_cos_sin_cache(rot_dim or head_dim, ctx.max_model_len, rope_parameters(config),
                                    getattr(config, "max_position_embeddings", ctx.max_model_len))
        self.register_buffer("cos_sin_cache", cache.to(ctx.device), persistent=False)

    def forward(self, positions, q, k, q_norm: RMSNorm | None = None,
                k_norm: RMSNorm | None = None, **store):
        """With ``q_norm``/``k_norm`` (RMSNorms over head_dim) each head is normalised first,
        in the same op (one kernel on the GPU). ``store`` (v, k_cache, v_cache, slot_mapping,
        k_scale, v_scale) goes to the op, which then also stores k and v in the cache."""
        if q_norm is None and k_norm is None:
            return self.ops.rotary_embedding(positions, q, k, self.head_dim, self.cos_sin_cache,
                                             self.is_neox, **store)
        if q_norm is None or k_norm is None:
            raise ValueError("give both q_norm and k_norm, or neither")
        if (q_norm.eps, q_norm.offset) != (k_norm.eps, k_norm.offset):
            raise ValueError("q_norm and k_norm must share eps and offset")
        return self.ops.rotary_embedding(positions, q, k, self.head_dim, self.cos_sin_cache,
                                         self.is_neox, q_norm.weight, k_norm.weight,
                                         q_norm.eps, q_norm.offset, **store)


# HF ``hidden_act`` names -> the one name ops use (``<name>_and_mul``, ``fused_moe(activation=)``)
ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh",
               "gelu_tanh": "gelu_tanh"}


def canonical_activation(name: str) -> str:
    """"silu" or "gelu_tanh" for a HF activation name; ValueError for anything else."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation '{name}' is not supported (supported: "
                         f"{', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]


def act_and_mul_op(ctx: ModelContext, name: str):
    """The gated-activation op for a HF ``hidden_act`` name."""
    return getattr(ctx.ops, f"{canonical_activation(name)}_and_mul")
