"""Activation quantization to fp8 e4m3: dynamic scales per token (or per token and group of
columns), or one static scale. One program per (row, group); no host sync."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm_triton.kernels._common import check_tensor, next_pow2

FP8_MAX = tl.constexpr(448.0)
MIN_SCALE = tl.constexpr(1e-12)


@triton.jit
def _act_quant_kernel(x_ptr, q_ptr, s_ptr, static_ptr, K, GROUP, stride_xm, stride_qm,
                      STATIC: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1)
    start = g * GROUP
    x_row = x_ptr + row * stride_xm + start
    q_row = q_ptr + row * stride_qm + start
    if STATIC:
        scale = tl.load(static_ptr).to(tl.float32)
    else:
        amax = tl.zeros((BLOCK,), dtype=tl.float32)
        for k0 in range(0, GROUP, BLOCK):
            offs = k0 + tl.arange(0, BLOCK)
            x = tl.load(x_row + offs, mask=offs < GROUP, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.abs(x))
        scale = tl.maximum(tl.max(amax, axis=0) / FP8_MAX, MIN_SCALE)
        tl.store(s_ptr + row * tl.cdiv(K, GROUP) + g, scale)
    for k0 in range(0, GROUP, BLOCK):
        offs = k0 + tl.arange(0, BLOCK)
        x = tl.load(x_row + offs, mask=offs < GROUP, other=0.0).to(tl.float32)
        q = tl.minimum(tl.maximum(tl.math.div_rn(x, scale), -FP8_MAX), FP8_MAX)  # as torch
        tl.store(q_row + offs, q.to(q_ptr.dtype.element_ty), mask=offs < GROUP)


def quant_act(x: torch.Tensor, group: int | None = None,
              static_scale: torch.Tensor | None = None):
    """x [M, K] -> (fp8 [M, K], float32 scales): dynamic ``[M, K // group]`` (``group`` None:
    per token, [M, 1]), or ``static_scale`` (a 1-element float32 tensor) returned as the scale."""
    check_tensor("x", x, 2)
    m, k = x.shape
    group = group or k
    if k % group:
        raise ValueError(f"K={k} is not a multiple of the activation group {group}")
    q = torch.empty(m, k, dtype=torch.float8_e4m3fn, device=x.device)
    if static_scale is not None:
        check_tensor("static_scale", static_scale, None, dtypes=(torch.float32,), device=x.device)
        if static_scale.numel() != 1:
            raise ValueError(f"static_scale must hold one value, got shape "
                             f"{tuple(static_scale.shape)}")
        scales, groups = static_scale.reshape(1, 1), 1
    else:
        groups = k // group
        scales = torch.empty(m, groups, dtype=torch.float32, device=x.device)
    if m:
        block = min(next_pow2(group), 2048)
        _act_quant_kernel[(m, groups)](x, q, scales, scales, k, group, x.stride(0), q.stride(0),
                                       STATIC=static_scale is not None, BLOCK=block,
                                       num_warps=4 if block >= 1024 else 1)
    return q, scales
