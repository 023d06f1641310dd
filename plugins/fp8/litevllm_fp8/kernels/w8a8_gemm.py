"""W8A8 GEMM: fp8 activations x fp8 weights on the tensor cores (``tl.dot`` on float8e4nv,
compute capability >= 8.9), float32 accumulation, scales applied in registers.

``y[m, n] = sum_k xq[m, k] * x_scale[m, k // group_k] * w[n, k] * w_scale[n, k // group_k]``:
per-token x per-channel (per-tensor scales arrive expanded per row; ``group_k = K``, scales
applied once at the end), or block-wise (``group_k`` = 128: each K tile's partial product is
scaled by its group's activation and weight scales). No host sync: CUDA-graph safe.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm_triton.kernels._common import FLOAT_DTYPES, cdiv, check_tensor

from litevllm_fp8.kernels._device import FP8_DTYPES, num_sms


@triton.jit
def _w8a8_kernel(a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, bias_ptr, M, N, K, GROUP_K,
                 stride_am, stride_bn, stride_cm, stride_asm, stride_bsn,
                 BLOCKWISE: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_n  # grouped order: GROUP_M row tiles reuse each weight tile in L2
    first_m = (pid // group) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % size_m
    pid_n = (pid % group) // size_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    n_ok = offs_n < N
    a_ptrs = a_ptr + offs_m.to(tl.int64)[:, None] * stride_am + offs_k[None, :]
    b_ptrs = b_ptr + offs_n.to(tl.int64)[None, :] * stride_bn + offs_k[:, None]  # tile of W^T
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = offs_k < K - k0
        a = tl.load(a_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if BLOCKWISE:  # BLOCK_K divides GROUP_K: one scale pair per tile
            g = k0 // GROUP_K
            sa = tl.load(as_ptr + offs_m * stride_asm + g, mask=m_ok, other=0.0)
            sb = tl.load(bs_ptr + offs_n * stride_bsn + g, mask=n_ok, other=0.0)
            acc += tl.dot(a, b) * sa[:, None] * sb[None, :]
        else:
            acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    if not BLOCKWISE:
        sa = tl.load(as_ptr + offs_m * stride_asm, mask=m_ok, other=0.0)
        sb = tl.load(bs_ptr + offs_n * stride_bsn, mask=n_ok, other=0.0)
        acc = acc * sa[:, None] * sb[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def default_config(m: int, n: int, device: torch.device) -> dict:
    """Tiles by token count: weight-bandwidth bound at decode sizes (narrow tiles, many
    programs), compute bound beyond. Picked from the H200 sweep in benchmarks/bench_fp8.py."""
    if m <= 64:  # BLOCK_M 64: one Hopper warpgroup MMA; 32-wide N tiles unless N is wide
        if cdiv(n, 64) >= 0.7 * num_sms(device):
            return dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=256, GROUP_M=1, num_warps=4,
                        num_stages=3)
        return dict(BLOCK_M=64, BLOCK_N=32, BLOCK_K=256, GROUP_M=1, num_warps=4, num_stages=4)
    if m <= 256:
        return dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, num_warps=4, num_stages=4)
    return dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=128, GROUP_M=8, num_warps=8, num_stages=3)


def w8a8_gemm(xq: torch.Tensor, x_scale: torch.Tensor, weight: torch.Tensor,
              w_scale: torch.Tensor, group_k: int, bias: torch.Tensor | None,
              out_dtype: torch.dtype, config: dict | None = None) -> torch.Tensor:
    """xq fp8 [M, K], x_scale float32 [M or 1, K // group_k or 1], weight fp8 (or its uint8
    bits) [N, K], w_scale float32 [N, ceil(K / group_k)] -> out_dtype [M, N]."""
    check_tensor("xq", xq, 2, dtypes=(torch.float8_e4m3fn,))
    dev = xq.device
    check_tensor("weight", weight, 2, dtypes=FP8_DTYPES, device=dev)
    check_tensor("x_scale", x_scale, 2, dtypes=(torch.float32,), device=dev)
    check_tensor("w_scale", w_scale, 2, dtypes=(torch.float32,), device=dev)
    m, k = xq.shape
    n = weight.shape[0]
    if weight.shape[1] != k:
        raise ValueError(f"weight must be [N, K={k}], got {tuple(weight.shape)}")
    kb = w_scale.shape[1]
    if w_scale.shape[0] != n or kb != cdiv(k, group_k):
        raise ValueError(f"w_scale must be [N={n}, {cdiv(k, group_k)}], got "
                         f"{tuple(w_scale.shape)}")
    blockwise = kb > 1
    if x_scale.shape[0] not in (1, m) or x_scale.shape[1] != (kb if blockwise else 1):
        raise ValueError(f"x_scale must be [M={m} or 1, {kb if blockwise else 1}], got "
                         f"{tuple(x_scale.shape)}")
    if bias is not None:
        check_tensor("bias", bias, 1, device=dev)
    cfg = dict(config or default_config(m, n, xq.device))
    if blockwise and config is None:  # a tile must not straddle two scale groups
        cfg["BLOCK_K"] = min(cfg["BLOCK_K"], group_k & -group_k)
    if blockwise and group_k % cfg["BLOCK_K"]:
        raise ValueError(f"group_k={group_k} is not a multiple of BLOCK_K={cfg['BLOCK_K']}")
    if out_dtype not in FLOAT_DTYPES:
        raise ValueError(f"out_dtype must be one of {FLOAT_DTYPES}, got {out_dtype}")
    out = torch.empty(m, n, dtype=out_dtype, device=dev)
    if m == 0:
        return out
    w = weight.view(torch.float8_e4m3fn)
    grid = (cdiv(m, cfg["BLOCK_M"]) * cdiv(n, cfg["BLOCK_N"]),)
    _w8a8_kernel[grid](xq, w, out, x_scale, w_scale, bias if bias is not None else out, m, n, k,
                       group_k, xq.stride(0), w.stride(0), out.stride(0),
                       x_scale.stride(0) if x_scale.shape[0] == m else 0, w_scale.stride(0),
                       BLOCKWISE=blockwise, HAS_BIAS=bias is not None, **cfg)
    return out
