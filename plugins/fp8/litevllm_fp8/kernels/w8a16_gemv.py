"""Weight-only FP8 GEMV for 1..4 tokens: the decode step reads every weight once, so this
kernel is built to stream the fp8 weight at the copy bandwidth.

Layout: the weight is [N, K] with K contiguous (as in checkpoints; the ``tl.dot`` kernels use it
too, so it is not transposed). A program owns BLOCK_N output rows and one K slice; its tile is
[BLOCK_N, BLOCK_K] with 16 consecutive K bytes per thread (one 16-byte load), lanes and then
warps along N, so no K reduction ever crosses a warp. Each thread keeps a private float32
accumulator per weight element (``EACH=False``) or per row (``EACH=True``, summed over its own
16 values plus lane shuffles per tile): the K loop has no shared memory and no barrier; the one
cross-warp step is the final ``tl.sum``. The K range is split over SPLIT_K programs to fill the
GPU; the float32 partials are added (with bias and the cast) by a small second kernel. No host
sync: CUDA-graph safe. Per-channel scales are applied once at the end; block-wise scales per
tile (BLOCK_K then divides ``group_k``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm_triton.kernels._common import cdiv, check_tensor, next_pow2

from litevllm_fp8.kernels._device import FP8_DTYPES, num_sms
from litevllm_fp8.kernels._e4m3 import E4M3_BITS_SCALE, e4m3_bits_to_f16, native_fp8
from litevllm_fp8.kernels import tuning

MAX_M = 4  # rows of x one program serves (one accumulator set per row)


@triton.jit
def _fma(acc, w, x_ptrs, k_ok, EVEN_K: tl.constexpr, EACH: tl.constexpr):
    # x is loaded broadcast to the weight tile's shape, so the load takes the tile's layout
    # (a [BLOCK_K] load would be spread over all warps and need a shared-memory exchange)
    x_ptrs = tl.broadcast_to(x_ptrs[None, :], w.shape)
    if EVEN_K:
        x = tl.load(x_ptrs).to(tl.float32)
    else:
        x = tl.load(x_ptrs, mask=tl.broadcast_to(k_ok[None, :], w.shape), other=0.0)
        x = x.to(tl.float32)
    if EACH:
        acc += tl.sum(w * x, axis=1)
    else:
        acc += w * x
    return acc


@triton.jit
def _finish(acc, s, bias, out_ptr, part_ptr, pid_k, row, offs_n, n_ok, stride_om, N,
            ROWS: tl.constexpr, EACH: tl.constexpr, SPLIT_K: tl.constexpr,
            HAS_BIAS: tl.constexpr):
    if not EACH:
        acc = tl.sum(acc, axis=1)
    acc = acc * s
    if SPLIT_K == 1:
        if HAS_BIAS:
            acc += bias
        tl.store(out_ptr + row * stride_om + offs_n, acc.to(out_ptr.dtype.element_ty), mask=n_ok)
    else:
        tl.store(part_ptr + (pid_k * ROWS + row) * N + offs_n, acc, mask=n_ok)


@triton.jit
def _w8_gemv_kernel(x_ptr, w_ptr, s_ptr, bias_ptr, out_ptr, part_ptr, N, K, GROUP_K, K_SPLIT,
                    stride_xm, stride_wn, stride_sn, stride_om,
                    ROWS: tl.constexpr, BLOCKWISE: tl.constexpr, HAS_BIAS: tl.constexpr,
                    NATIVE: tl.constexpr, W_SCALE: tl.constexpr, EVEN_K: tl.constexpr,
                    EACH: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr, VEC: tl.constexpr, UNROLL: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # VEC consecutive K per thread: 8 lets a 16-bit x load land in the weight tile's layout
    # (no shared-memory layout change in the loop), 16 gives 16-byte weight loads
    offs_k = tl.max_contiguous(tl.multiple_of(tl.arange(0, BLOCK_K), VEC), VEC)
    n_ok = offs_n < N
    rows = tl.minimum(offs_n, N - 1)  # ragged N: re-read the last row, loads stay unmasked
    k_start = pid_k * K_SPLIT  # K_SPLIT: a multiple of BLOCK_K
    k_end = tl.minimum(k_start + K_SPLIT, K)
    w_ptrs = w_ptr + rows.to(tl.int64)[:, None] * stride_wn + (k_start + offs_k)[None, :]
    x_ptrs = x_ptr + k_start + offs_k
    if EACH:
        acc0 = tl.zeros((BLOCK_N,), dtype=tl.float32)
    else:
        acc0 = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    acc1 = acc0
    acc2 = acc0
    acc3 = acc0
    # UNROLL > 1: several tiles' loads in flight per thread before their FMAs
    for k0 in tl.range(k_start, k_end, BLOCK_K, loop_unroll_factor=UNROLL):
        k_ok = offs_k < k_end - k0
        if EVEN_K:
            w = tl.load(w_ptrs)
        else:
            w = tl.load(w_ptrs, mask=k_ok[None, :], other=0.0)
        if NATIVE:
            w = w.to(tl.float32)
        else:
            w = e4m3_bits_to_f16(w).to(tl.float32)
        if BLOCKWISE:  # BLOCK_K divides GROUP_K: one scale per row in this tile
            w = w * tl.load(s_ptr + rows * stride_sn + k0 // GROUP_K)[:, None]
        acc0 = _fma(acc0, w, x_ptrs, k_ok, EVEN_K, EACH)
        if ROWS > 1:
            acc1 = _fma(acc1, w, x_ptrs + stride_xm, k_ok, EVEN_K, EACH)
        if ROWS > 2:
            acc2 = _fma(acc2, w, x_ptrs + 2 * stride_xm, k_ok, EVEN_K, EACH)
        if ROWS > 3:
            acc3 = _fma(acc3, w, x_ptrs + 3 * stride_xm, k_ok, EVEN_K, EACH)
        w_ptrs += BLOCK_K
        x_ptrs += BLOCK_K
    if BLOCKWISE:
        s = tl.full((BLOCK_N,), W_SCALE, tl.float32)
    else:
        s = tl.load(s_ptr + rows * stride_sn) * W_SCALE
    bias = tl.zeros((BLOCK_N,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + rows).to(tl.float32)
    _finish(acc0, s, bias, out_ptr, part_ptr, pid_k, 0, offs_n, n_ok, stride_om, N, ROWS, EACH,
            SPLIT_K, HAS_BIAS)
    if ROWS > 1:
        _finish(acc1, s, bias, out_ptr, part_ptr, pid_k, 1, offs_n, n_ok, stride_om, N, ROWS,
                EACH, SPLIT_K, HAS_BIAS)
    if ROWS > 2:
        _finish(acc2, s, bias, out_ptr, part_ptr, pid_k, 2, offs_n, n_ok, stride_om, N, ROWS,
                EACH, SPLIT_K, HAS_BIAS)
    if ROWS > 3:
        _finish(acc3, s, bias, out_ptr, part_ptr, pid_k, 3, offs_n, n_ok, stride_om, N, ROWS,
                EACH, SPLIT_K, HAS_BIAS)


@triton.jit
def _split_sum_kernel(part_ptr, bias_ptr, out_ptr, MN, N, SPLIT_K: tl.constexpr,
                      HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    """out [M, N] = sum of the SPLIT_K float32 partials [SPLIT_K, M, N] (+ bias), cast."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < MN
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in tl.static_range(SPLIT_K):
        acc += tl.load(part_ptr + i * MN + offs, mask=ok, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs % N, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=ok)


def split_for(n: int, k: int, block_n: int, block_k: int, programs: int) -> int:
    """K splits (a power of two, <= 16) until the grid has ``programs`` programs, keeping at
    least two K tiles per split."""
    split = 1
    while cdiv(n, block_n) * split < programs and k // (split * 2) >= 2 * block_k \
            and split < 16:
        split *= 2
    return split


def default_config(m: int, n: int, k: int, group_k: int, device: torch.device,
                   dtype: torch.dtype) -> dict | None:
    """The measured pick for this GPU and shape (``tuning``; None: the ``tl.dot`` kernel serves
    it), else ``heuristic_config``; also that where the pick's BLOCK_K does not divide the
    block-wise scales' ``group_k`` (picks are measured with per-channel scales)."""
    found, cfg = tuning.lookup(m, k, n, device)
    if found and (cfg is None or group_k >= k or group_k % cfg["BLOCK_K"] == 0):
        return cfg
    return heuristic_config(m, n, k, group_k, device, dtype)


def heuristic_config(m: int, n: int, k: int, group_k: int, device: torch.device,
                     dtype: torch.dtype) -> dict:
    """8 warps, each streaming its own rows in 512-column tiles (the widest one warp spans
    with 16-byte loads; narrower under block-wise scales), loop unrolled twice, a private
    accumulator per weight for M = 1 and per row for M > 1 (registers: 45 and 61 on sm_90);
    K split until ~4 programs per SM."""
    vec = 16 if dtype != torch.float32 else 8
    block_k = 32 * vec
    if group_k < k:
        block_k = min(block_k, group_k & -group_k)
    block_k = max(vec, min(block_k, next_pow2(k)))
    warps = 8
    block_n = warps * max(1, 32 // (block_k // vec))  # one layout tile: no idle threads
    split = split_for(n, k, block_n, block_k, 4 * num_sms(device))
    return dict(BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split, EACH=m > 1, VEC=vec,
                UNROLL=2, num_warps=warps)


def w8a16_gemv(x: torch.Tensor, weight: torch.Tensor, w_scale: torch.Tensor, group_k: int,
               bias: torch.Tensor | None = None, config: dict | None = None,
               native: bool | None = None) -> torch.Tensor:
    """x [M <= 4, K] (fp16/bf16/fp32) @ dequant(weight fp8 [N, K], w_scale [N, ceil(K/group_k)])^T
    -> [M, N] in x's dtype. ``native`` False decodes the e4m3 bits with integer ops."""
    check_tensor("x", x, 2)
    dev = x.device
    check_tensor("weight", weight, 2, dtypes=FP8_DTYPES, device=dev)
    check_tensor("w_scale", w_scale, 2, dtypes=(torch.float32,), device=dev)
    m, k = x.shape
    n = weight.shape[0]
    if not 1 <= m <= MAX_M:
        raise ValueError(f"w8a16_gemv serves 1..{MAX_M} rows, got M={m}")
    if weight.shape[1] != k:
        raise ValueError(f"weight must be [N, K={k}], got {tuple(weight.shape)}")
    if w_scale.shape[0] != n or w_scale.shape[1] != cdiv(k, group_k):
        raise ValueError(f"w_scale must be [N={n}, {cdiv(k, group_k)}], got "
                         f"{tuple(w_scale.shape)}")
    if bias is not None:
        check_tensor("bias", bias, 1, device=dev)
        if bias.shape[0] != n:
            raise ValueError(f"bias must be [N={n}], got {tuple(bias.shape)}")
    cfg = dict(config or default_config(m, n, k, group_k, dev, x.dtype)
               or heuristic_config(m, n, k, group_k, dev, x.dtype))
    split, block_k = cfg.pop("SPLIT_K"), cfg["BLOCK_K"]
    blockwise = w_scale.shape[1] > 1
    if blockwise and group_k % block_k:
        raise ValueError(f"group_k={group_k} is not a multiple of BLOCK_K={block_k}")
    k_split = cdiv(cdiv(k, split), block_k) * block_k
    split = cdiv(k, k_split)
    out = torch.empty((m, n), dtype=x.dtype, device=dev)
    part = torch.empty((split, m, n), dtype=torch.float32, device=dev) if split > 1 else out
    native = native_fp8(dev) if native is None else native
    w = weight.view(torch.float8_e4m3fn if native else torch.uint8)
    b = bias if bias is not None else w_scale
    _w8_gemv_kernel[(cdiv(n, cfg["BLOCK_N"]), split)](
        x, w, w_scale, b, out, part, n, k, group_k, k_split, x.stride(0), w.stride(0),
        w_scale.stride(0), out.stride(0), ROWS=m, BLOCKWISE=blockwise, HAS_BIAS=bias is not None,
        NATIVE=native, W_SCALE=1.0 if native else E4M3_BITS_SCALE, EVEN_K=k % block_k == 0,
        SPLIT_K=split, **cfg)
    if split > 1:
        block = 1024
        _split_sum_kernel[(cdiv(m * n, block),)](part, b, out, m * n, n, SPLIT_K=split,
                                                        HAS_BIAS=bias is not None, BLOCK=block)
    return out
