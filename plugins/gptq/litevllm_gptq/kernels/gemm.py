"""W4A16 / W8A16 matmul on tensor cores: ``tl.dot`` with the packed tile dequantized in registers.

A ``[BK / p, BN]`` int32 tile is unpacked to ``[BK, BN]`` exact integer codes in the activation
dtype (codes < 256 are exact in bfloat16); one K tile lies in one quantization group, so the
group's scale and zero are applied to the tile's dot product:
``x @ (q * s + b) = (x @ q) * s + rowsum(x) * b``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm_gptq.kernels._common import check_inputs, pow2_tile, unpack_exact
from litevllm_gptq.kernels.reduce import splitk_reduce
from litevllm_gptq.kernels.tuning import lookup


@triton.jit
def _gemm_kernel(x_ptr, qw_ptr, s_ptr, zb_ptr, perm_ptr, bias_ptr, out_ptr,
                 M, N, K, ROWS_PER_SPLIT, GROUP_ROWS, stride_xm, stride_om, stride_os,
                 BITS: tl.constexpr, HAS_ZB: tl.constexpr, HAS_PERM: tl.constexpr,
                 HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BKP: tl.constexpr):
    P: tl.constexpr = 32 // BITS
    BK: tl.constexpr = BKP * P
    MID: tl.constexpr = 1 << (BITS - 1)
    pid_m, pid_n, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    m_mask, n_mask = offs_m < M, offs_n < N
    r = tl.arange(0, BKP)
    shifts = tl.arange(0, P) * BITS
    kk = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], tl.float32)
    row_start = pid_k * ROWS_PER_SPLIT
    for row0 in range(row_start, row_start + ROWS_PER_SPLIT, BKP):
        k = row0 * P + kk
        if HAS_PERM:
            k = tl.load(perm_ptr + k)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :], mask=m_mask[:, None],
                    other=0.0)
        packed = tl.load(qw_ptr + (row0 + r)[:, None] * N + offs_n[None, :], mask=n_mask[None, :],
                         other=0)
        q = unpack_exact(packed[:, None, :], shifts[None, :, None], BITS)  # [BKP, P, BN]
        q = tl.reshape(q, (BK, BN)).to(x.dtype)
        d = tl.dot(x, q, out_dtype=tl.float32)
        g = row0 // GROUP_ROWS
        s = tl.load(s_ptr + g * N + offs_n, mask=n_mask, other=0.0).to(tl.float32)
        sumx = tl.sum(x.to(tl.float32), axis=1)
        if HAS_ZB:
            b = tl.load(zb_ptr + g * N + offs_n, mask=n_mask, other=0.0).to(tl.float32)
            acc += d * s[None, :] + sumx[:, None] * b[None, :]
        else:
            acc += (d - MID * sumx[:, None]) * s[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + pid_k * stride_os + offs_m[:, None] * stride_om + offs_n[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


def default_config(m: int, k: int, n: int, bits: int) -> dict:
    bm = 16 if m <= 16 else 32 if m <= 32 else 64 if m <= 64 else 128
    bn = 64 if m <= 64 else 128
    tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    split = 1
    while tiles * split < 264 and k // (split * 2) >= 512 and split < 8:
        split *= 2
    return dict(BM=bm, BN=bn, BK=128, SPLIT=split, num_warps=4, num_stages=3)


def gemm(x: torch.Tensor, w, bias: torch.Tensor | None = None, config: dict | None = None):
    """``x [M, K] @ W [K, N] (+ bias)`` -> ``[M, N]`` in ``x.dtype`` on tensor cores."""
    check_inputs(x, w)
    m, k = x.shape
    n = w.shape[1]
    p = 32 // w.bits
    rows = k // p
    cfg = {**default_config(m, k, n, w.bits), **(lookup("gemm", m, w.bits, k, n, x.device) or {}),
           **(config or {})}
    # one K tile inside one group: BK divides the group size
    bkp = pow2_tile(w.group_size // p, cfg["BK"] // p)
    if bkp * p < 16:
        raise ValueError(f"group_size={w.group_size} is too small for the tensor-core path")
    split = cfg["SPLIT"]
    while split > 1 and rows % (split * bkp):
        split //= 2
    out = torch.empty(m, n, device=x.device, dtype=x.dtype)
    target = out if split == 1 else torch.empty(split, m, n, device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(m, cfg["BM"]), triton.cdiv(n, cfg["BN"]), split)
    _gemm_kernel[grid](
        x, w.qweight, w.scales, w.bias if w.bias is not None else w.scales,
        w.perm if w.perm is not None else w.qweight, bias if bias is not None else w.scales,
        target, m, n, k, rows // split, w.group_size // p, x.stride(0), n, m * n,
        BITS=w.bits, HAS_ZB=w.bias is not None, HAS_PERM=w.perm is not None,
        HAS_BIAS=bias is not None and split == 1, BM=cfg["BM"], BN=cfg["BN"], BKP=bkp,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out if split == 1 else splitk_reduce(target, bias, out)
