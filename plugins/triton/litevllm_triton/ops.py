"""Drop-in ops with the signatures of ``litevllm.ops.torch_ops``, backed by Triton kernels.

One difference: ``rotary_embedding`` rotates q and k in place (and returns them), where the
reference returns new tensors. ``linear`` and ``gated_linear`` run the Triton skinny GEMM for
up to 256 rows where this GPU's table (``gemv_table``) says it beats cuBLAS, else cuBLAS.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from litevllm_triton import kernels
from litevllm_triton.gemv_table import gemv_config
from litevllm_triton.kernels._common import pdl_enabled
from litevllm_triton.kernels.fused_moe import fused_moe as _fused_moe
from litevllm_triton.kernels.gemv import MAX_M, gemv


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None, offset: float = 0.0):
    return kernels.rms_norm(x, weight, eps, residual, offset)


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, head_dim: int,
                     cos_sin_cache: torch.Tensor, is_neox: bool = True,
                     q_norm: torch.Tensor | None = None, k_norm: torch.Tensor | None = None,
                     norm_eps: float = 1e-6, norm_offset: float = 0.0,
                     v: torch.Tensor | None = None, k_cache: torch.Tensor | None = None,
                     v_cache: torch.Tensor | None = None,
                     slot_mapping: torch.Tensor | None = None, k_scale: float = 1.0,
                     v_scale: float = 1.0):
    return kernels.rotary_embedding(positions, q, k, head_dim, cos_sin_cache, is_neox, q_norm,
                                    k_norm, norm_eps, norm_offset, v, k_cache, v_cache,
                                    slot_mapping, k_scale, v_scale)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    return kernels.silu_and_mul(x)


def gelu_tanh_and_mul(x: torch.Tensor) -> torch.Tensor:
    return kernels.gelu_tanh_and_mul(x)


def fused_moe(hidden: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
              router_logits: torch.Tensor, top_k: int, renormalize: bool,
              activation: str = "silu", shared: torch.Tensor | None = None,
              shared_gate: torch.Tensor | None = None, shared_experts: int = 0) -> torch.Tensor:
    return _fused_moe(hidden, w13, w2, router_logits, top_k, renormalize, activation, shared,
                      shared_gate, shared_experts)


def reshape_and_cache(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor,
                      v_cache: torch.Tensor, slot_mapping: torch.Tensor,
                      k_scale: float = 1.0, v_scale: float = 1.0) -> None:
    kernels.reshape_and_cache(key, value, k_cache, v_cache, slot_mapping, k_scale, v_scale)


def positions_and_slots(query_start_loc: torch.Tensor, seq_lens: torch.Tensor,
                        block_tables: torch.Tensor, block_size: int, positions: torch.Tensor,
                        slots: torch.Tensor) -> None:
    kernels.positions_and_slots(query_start_loc, seq_lens, block_tables, block_size, positions,
                                slots)


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
           top_p: torch.Tensor, min_p: torch.Tensor, greedy: torch.Tensor, seeds: torch.Tensor,
           steps: torch.Tensor) -> torch.Tensor:
    return kernels.sample(logits, temperature, top_k, top_p, min_p, greedy, seeds, steps)


def _skinny(kind: str, x: torch.Tensor, weight: torch.Tensor, bias) -> dict | None:
    """The tuned GEMV tile for this call, or None (cuBLAS)."""
    if x.dim() != 2 or not 0 < x.shape[0] <= MAX_M or x.dtype != weight.dtype \
            or x.stride(-1) != 1 or weight.stride(-1) != 1 \
            or (bias is not None and bias.dtype != x.dtype):
        return None
    n = weight.shape[0] // 2 if kind == "gated" else weight.shape[0]
    return gemv_config(kind, x.shape[0], n, weight.shape[1], x.device)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    cfg = _skinny("linear", x, weight, bias)
    if cfg is None:
        return F.linear(x, weight, bias)
    return gemv(x, weight, bias, cfg, pdl=pdl_enabled(x.device))


def gated_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 activation: str) -> torch.Tensor:
    cfg = _skinny("gated", x, weight, bias)
    if cfg is None:
        act = kernels.silu_and_mul if activation == "silu" else kernels.gelu_tanh_and_mul
        return act(F.linear(x, weight, bias))
    return gemv(x, weight, bias, cfg, activation, pdl=pdl_enabled(x.device))
