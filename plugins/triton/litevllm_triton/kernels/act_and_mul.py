"""Gated activations: out = act(x[..., :I]) * x[..., I:], for act in {silu, gelu_tanh}."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm_triton.kernels._common import cdiv, check_tensor, gated_act, next_pow2

SILU, GELU_TANH = 0, 1


@triton.jit
def _act_and_mul_kernel(x_ptr, out_ptr, stride_x, stride_out, inter,
                        ACT: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < inter
    a = tl.load(x_ptr + row * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
    b = tl.load(x_ptr + row * stride_x + inter + cols, mask=ok, other=0.0).to(tl.float32)
    h = gated_act(a, ACT)
    tl.store(out_ptr + row * stride_out + cols, (h * b).to(out_ptr.dtype.element_ty), mask=ok)


def _act_and_mul(x: torch.Tensor, act: int) -> torch.Tensor:
    check_tensor("x", x)
    if not (x.dim() >= 1 and x.shape[-1] % 2 == 0):
        raise ValueError(f"x last dim must be even (gate and up halves), "
                         f"got shape {tuple(x.shape)}")
    inter = x.shape[-1] // 2
    x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    out = torch.empty(*x.shape[:-1], inter, dtype=x.dtype, device=x.device)
    rows = x2.shape[0]
    if rows == 0 or inter == 0:
        return out
    block = min(1024, next_pow2(inter))
    _act_and_mul_kernel[(rows, cdiv(inter, block))](
        x2, out, x2.stride(0), inter, inter, ACT=act, BLOCK=block, num_warps=4)
    return out


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [..., 2I] -> silu(x[..., :I]) * x[..., I:]."""
    return _act_and_mul(x, SILU)


def gelu_tanh_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [..., 2I] -> gelu_tanh(x[..., :I]) * x[..., I:]."""
    return _act_and_mul(x, GELU_TANH)
