"""Drop-in ops with the signatures of ``litevllm.ops.torch_ops``, backed by Triton kernels.

One difference: ``rotary_embedding`` rotates q and k in place (and returns them), where the
reference returns new tensors.
"""
from __future__ import annotations

import torch

from litevllm_triton import kernels
from litevllm_triton.kernels.fused_moe import fused_moe as _fused_moe


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None, offset: float = 0.0):
    return kernels.rms_norm(x, weight, eps, residual, offset)


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, head_dim: int,
                     cos_sin_cache: torch.Tensor, is_neox: bool = True):
    return kernels.rotary_embedding(positions, q, k, head_dim, cos_sin_cache, is_neox)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    return kernels.silu_and_mul(x)


def gelu_tanh_and_mul(x: torch.Tensor) -> torch.Tensor:
    return kernels.gelu_tanh_and_mul(x)


def fused_moe(hidden: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
              router_logits: torch.Tensor, top_k: int, renormalize: bool,
              activation: str = "silu") -> torch.Tensor:
    return _fused_moe(hidden, w13, w2, router_logits, top_k, renormalize, activation)


def reshape_and_cache(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor,
                      v_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    kernels.reshape_and_cache(key, value, k_cache, v_cache, slot_mapping)
