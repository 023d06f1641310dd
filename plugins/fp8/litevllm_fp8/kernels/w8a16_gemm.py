"""Weight-only FP8 GEMM: fp8 weights dequantized in registers to the activation dtype, then
``tl.dot`` with the 16/32-bit activations (float32 accumulation).

Serves decode-sized batches (M <= 16) on every GPU, as a split-K GEMV-like kernel: the step is
bound by the weight bytes, so the K loop is split over programs until the GPU is full and the
float32 partial sums are added afterwards. It is also the whole path on GPUs without FP8 tensor
cores. Scales: ``w_scale [N, KB]`` per output row and ``group_k`` columns (KB = 1: per
channel, applied at the end). No host sync: CUDA-graph safe.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm_triton.kernels._common import cdiv, check_tensor

from litevllm_fp8.kernels._device import FP8_DTYPES, num_sms
from litevllm_fp8.kernels._e4m3 import E4M3_BITS_SCALE, e4m3_bits_to_f16, native_fp8


@triton.jit
def _w8a16_kernel(x_ptr, w_ptr, s_ptr, out_ptr, bias_ptr, M, N, K, GROUP_K, K_SPLIT,
                  stride_xm, stride_wn, stride_sn, stride_om, stride_os,
                  BLOCKWISE: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
                  NATIVE: tl.constexpr, W_SCALE: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """NATIVE: w is float8e4nv; else uint8 e4m3 bits, decoded to W_SCALE^-1 * value."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    n_ok = offs_n < N
    k_start = pid_k * K_SPLIT  # K_SPLIT: a multiple of BLOCK_K
    k_end = tl.minimum(k_start + K_SPLIT, K)
    x_ptrs = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm + (k_start + offs_k)[None, :]
    w_ptrs = w_ptr + offs_n.to(tl.int64)[None, :] * stride_wn + (k_start + offs_k)[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        k_ok = offs_k < k_end - k0
        x = tl.load(x_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if not NATIVE:
            w = e4m3_bits_to_f16(w)
        if BLOCKWISE:  # BLOCK_K divides GROUP_K: one scale per row in this tile
            s = tl.load(s_ptr + offs_n * stride_sn + k0 // GROUP_K, mask=n_ok, other=0.0)
            w = (w.to(tl.float32) * (s * W_SCALE)[None, :]).to(x.dtype)
        else:  # fp8 values are exact in fp16/bf16/fp32: scale after the K loop
            w = w.to(x.dtype)
        if IEEE:
            acc = tl.dot(x, w, acc, input_precision="ieee")
        else:
            acc = tl.dot(x, w, acc)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if not BLOCKWISE:
        s = tl.load(s_ptr + offs_n * stride_sn, mask=n_ok, other=0.0)
        acc = acc * (s * W_SCALE)[None, :]
    if HAS_BIAS:
        if pid_k == 0:
            acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    o_ptrs = (out_ptr + pid_k.to(tl.int64) * stride_os + offs_m.to(tl.int64)[:, None] * stride_om
              + offs_n[None, :])
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def default_config(m: int, n: int, k: int, group_k: int, device: torch.device,
                   dtype: torch.dtype) -> dict:
    """Skinny M: 32-wide N tiles (16 when that leaves SMs idle) with long K tiles (no partial
    sums to add), K split only when N alone cannot fill the GPU; larger M: plain tiles."""
    block_k = 32 if dtype == torch.float32 else 256
    if group_k < k:  # block-wise scales: a tile must not straddle two groups
        block_k = min(block_k, group_k & -group_k)
    if m > 16:
        return dict(BLOCK_M=64, BLOCK_N=128 if m > 64 else 64, BLOCK_K=min(block_k, 128),
                    SPLIT_K=1, num_warps=4, num_stages=4)
    sms = num_sms(device)
    block_n = 32  # H200 sweep: 32 beat 64 on gate_up (42 vs 48 us), ties elsewhere
    while block_n > 16 and cdiv(n, block_n) < 0.9 * sms:
        block_n //= 2
    tiles, split = cdiv(n, block_n), 1
    while tiles * split < sms and k // (split * 2) >= 4 * block_k:
        split *= 2
    return dict(BLOCK_M=16, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split, num_warps=4,
                num_stages=4)


def w8a16_gemm(x: torch.Tensor, weight: torch.Tensor, w_scale: torch.Tensor, group_k: int,
               bias: torch.Tensor | None = None, config: dict | None = None,
               native: bool | None = None) -> torch.Tensor:
    """x [M, K] (fp16/bf16/fp32) @ dequant(weight fp8 [N, K], w_scale [N, ceil(K/group_k)])^T
    -> [M, N] in x's dtype. ``native`` False decodes the e4m3 bits with integer ops (GPUs
    without fp8 support; None: by device)."""
    check_tensor("x", x, 2)
    dev = x.device
    check_tensor("weight", weight, 2, dtypes=FP8_DTYPES, device=dev)
    check_tensor("w_scale", w_scale, 2, dtypes=(torch.float32,), device=dev)
    m, k = x.shape
    n = weight.shape[0]
    if weight.shape[1] != k:
        raise ValueError(f"weight must be [N, K={k}], got {tuple(weight.shape)}")
    if w_scale.shape[0] != n or w_scale.shape[1] != cdiv(k, group_k):
        raise ValueError(f"w_scale must be [N={n}, {cdiv(k, group_k)}], got "
                         f"{tuple(w_scale.shape)}")
    if bias is not None:
        check_tensor("bias", bias, 1, device=dev)
    cfg = dict(config or default_config(m, n, k, group_k, dev, x.dtype))
    split = cfg.pop("SPLIT_K")
    blockwise = w_scale.shape[1] > 1
    if blockwise and group_k % cfg["BLOCK_K"]:
        raise ValueError(f"group_k={group_k} is not a multiple of BLOCK_K={cfg['BLOCK_K']}")
    k_split = cdiv(cdiv(k, split), cfg["BLOCK_K"]) * cfg["BLOCK_K"]
    split = cdiv(k, k_split)
    out = torch.empty((split, m, n) if split > 1 else (m, n),
                      dtype=torch.float32 if split > 1 else x.dtype, device=dev)
    if m == 0:
        return out.new_empty(m, n, dtype=x.dtype)
    native = native_fp8(dev) if native is None else native
    w = weight.view(torch.float8_e4m3fn if native else torch.uint8)
    grid = (cdiv(n, cfg["BLOCK_N"]), cdiv(m, cfg["BLOCK_M"]), split)
    _w8a16_kernel[grid](x, w, w_scale, out, bias if bias is not None else w_scale, m, n, k,
                        group_k, k_split, x.stride(0), w.stride(0), w_scale.stride(0),
                        out.stride(-2), out.stride(0) if split > 1 else 0,
                        BLOCKWISE=blockwise, HAS_BIAS=bias is not None,
                        IEEE=x.dtype == torch.float32, NATIVE=native,
                        W_SCALE=1.0 if native else E4M3_BITS_SCALE, **cfg)
    return out.sum(0).to(x.dtype) if split > 1 else out
