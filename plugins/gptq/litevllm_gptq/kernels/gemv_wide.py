"""W4A16 / W8A16 GEMV whose threads all span N ("wide" GEMV, decode rows): the K loop has no
cross-thread reduction, so it streams the packed weight without barriers.

A program owns one row and ``BN = 32 * VEC * num_warps`` columns (lane ``i`` of warp ``w`` owns
``VEC`` consecutive columns: 16-byte loads) and a slice of K; a K step is an ``[R, BN]`` int32
tile inside one quantization group that each thread holds in its own registers, so its rows
are summed in-thread. ``SPLIT`` programs along K are summed by ``splitk_reduce``. Codes become
floats without an int-to-float convert: a shift puts codes in the mantissa of 1.0
(``f = 1 + q / 256`` or ``1 + q / 16``; ``x * f`` keeps ``x * q`` exact enough in float32);
at 4 bits one shift serves two codes, so a weight costs half a shift, one mask-or, one FMA. tests/compile_sm90.py checks
(PTX for sm_90) that the K loop has no barrier.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm_gptq.kernels._common import pow2_tile
from litevllm_gptq.kernels.reduce import splitk_reduce

# (R, VEC, num_warps) tiles benchmarks/bench_quant.py sweeps; tests/compile_sm90.py checks each
# compiles for sm_90 to a barrier-free K loop (VEC 8 with R 16 spills registers; VEC 8, R 8 on
# 2 warps puts 2 barriers in the loop: neither is listed)
SWEEP_TILES = ((16, 4, 1), (16, 4, 2), (16, 4, 4), (8, 8, 1), (8, 4, 1), (8, 4, 2))
MAX_R_PERM = 8  # with a permuted input (desc_act) R 16 spills registers


@triton.jit
def _gemv_wide_kernel(x_ptr, qw_ptr, s_ptr, zb_ptr, perm_ptr, bias_ptr, out_ptr, eid_ptr,
                      N, ROWS_PER_SPLIT, GROUP_ROWS, stride_xm, stride_om, stride_os,
                      stride_qe, stride_se,
                      BITS: tl.constexpr, HAS_ZB: tl.constexpr, HAS_PERM: tl.constexpr,
                      HAS_BIAS: tl.constexpr, HAS_EXPERT: tl.constexpr, R: tl.constexpr,
                      BN: tl.constexpr):
    P: tl.constexpr = 32 // BITS
    MID: tl.constexpr = 1 << (BITS - 1)
    TOP: tl.constexpr = (1 << BITS) - 1
    SCALE: tl.constexpr = 1 << BITS
    pid_n, pid_k, m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_mask = offs_n < N
    cols = offs_n[None, :]
    cmask = n_mask[None, :]
    r = tl.arange(0, R)[:, None]  # [R, 1]
    if HAS_EXPERT:  # row m multiplies its own expert's weight (MoE decode)
        e = tl.load(eid_ptr + m).to(tl.int64)
        qw_ptr += e * stride_qe
        s_ptr += e * stride_se
        zb_ptr += e * stride_se
    x_row = x_ptr + m * stride_xm
    acc = tl.zeros([1, BN], tl.float32)
    row_start = pid_k * ROWS_PER_SPLIT
    for row0 in range(row_start, row_start + ROWS_PER_SPLIT, R):
        rows = row0 + r
        packed = tl.load(qw_ptr + rows * N + cols, mask=cmask, other=0)  # [R, BN]
        grp = row0 // GROUP_ROWS  # the R rows lie in one group
        sg = tl.load(s_ptr + grp * N + cols, mask=cmask, other=0.0).to(tl.float32)
        if HAS_ZB:
            bg = tl.load(zb_ptr + grp * N + cols, mask=cmask, other=0.0).to(tl.float32)
        else:
            bg = -MID * sg
        # 4 bits: codes 2i and 2i+1 share one shift, landing at mantissa bits [15, 19) and
        # [19, 23): f_lo = 1 + q / 256, f_hi = 1 + q / 16. 8 bits: one shift per code, at
        # [15, 23): f_hi = 1 + q / 256 (a lower byte would lose float32 precision)
        p_lo = tl.zeros([R, BN], tl.float32)
        p_hi = tl.zeros([R, BN], tl.float32)
        x_lo = tl.zeros([R, 1], tl.float32)
        x_hi = tl.zeros([R, 1], tl.float32)
        for j in tl.static_range(P):
            k = rows * P + j
            if HAS_PERM:
                k = tl.load(perm_ptr + k)
            xj = tl.load(x_row + k).to(tl.float32)  # [R, 1]
            if BITS == 4 and j % 2 == 0:
                shift = 15 - 4 * j  # compile-time (j is a static_range index)
                if shift >= 0:
                    t = packed << shift
                else:
                    t = packed >> (-shift)
                f = ((t & (TOP << 15)) | 0x3F800000).to(tl.float32, bitcast=True)
                p_lo += xj * f
                x_lo += xj
            else:
                if BITS == 8:
                    shift = 15 - 8 * j
                    if shift >= 0:
                        t = packed << shift
                    else:
                        t = packed >> (-shift)
                f = ((t & (TOP << (23 - BITS))) | 0x3F800000).to(tl.float32, bitcast=True)
                p_hi += xj * f
                x_hi += xj
        # sum_k x q = 256 (p_lo - x_lo) + 2**(23 - HI) (p_hi - x_hi); w = q * s + b
        xl = tl.sum(x_lo, axis=0, keep_dims=True)
        xh = tl.sum(x_hi, axis=0, keep_dims=True)
        xq = (tl.sum(p_lo, axis=0, keep_dims=True) - xl) * 256.0 + \
            (tl.sum(p_hi, axis=0, keep_dims=True) - xh) * SCALE
        acc += xq * sg + (xl + xh) * bg
    out = tl.reshape(acc, (BN,))
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + pid_k * stride_os + m * stride_om + offs_n,
             out.to(out_ptr.dtype.element_ty), mask=n_mask)


def default_config(m: int, k: int, n: int, bits: int) -> dict:
    """One warp per program on 128 columns; split K until ~4 programs per SM."""
    cfg = dict(KERNEL="wide", VEC=4, R=16 if bits == 4 else 8, SPLIT=1, num_warps=1)
    bn = 32 * cfg["VEC"] * cfg["num_warps"]
    rows = k * bits // 32
    while triton.cdiv(n, bn) * cfg["SPLIT"] < 512 and \
            rows // (cfg["SPLIT"] * 2) >= cfg["R"] and cfg["SPLIT"] < 32:
        cfg["SPLIT"] *= 2
    return cfg


def launch(x, w, bias, cfg: dict, expert_ids=None):
    """Run the kernel for ``cfg`` (inputs checked by the caller): one row per program along
    grid axis 2, so M rows read each packed tile M times (mostly from L2)."""
    m, k = x.shape
    n = w.qweight.shape[-1]
    p = 32 // w.bits
    rows = k // p
    r = pow2_tile(w.group_size // p, cfg["R"] if w.perm is None else min(cfg["R"], MAX_R_PERM))
    split = cfg["SPLIT"]
    while split > 1 and rows % (split * r):
        split //= 2
    bn = 32 * cfg["VEC"] * cfg["num_warps"]
    out = torch.empty(m, n, device=x.device, dtype=x.dtype)
    target = out if split == 1 else torch.empty(split, m, n, device=x.device, dtype=torch.float32)
    experts = expert_ids is not None
    _gemv_wide_kernel[(triton.cdiv(n, bn), split, m)](
        x, w.qweight, w.scales, w.bias if w.bias is not None else w.scales,
        w.perm if w.perm is not None else w.qweight, bias if bias is not None else w.scales,
        target, expert_ids if experts else w.qweight, n, rows // split, w.group_size // p,
        x.stride(0), n, m * n, w.qweight.stride(0) if experts else 0,
        w.scales.stride(0) if experts else 0,
        BITS=w.bits, HAS_ZB=w.bias is not None, HAS_PERM=w.perm is not None,
        HAS_BIAS=bias is not None and split == 1, HAS_EXPERT=experts, R=r, BN=bn,
        num_warps=cfg["num_warps"])
    return out if split == 1 else splitk_reduce(target, bias, out)
