"""Fused MoE with fp8 expert weights: the routing and row layout of litevllm_triton's fused_moe
(``route_and_align``, tuned block sizes), and a grouped GEMM that dequantizes each fp8 weight
tile to the activation dtype in registers (per-channel scales, applied after the K loop).

Decode-sized MoE steps are bound by the expert bytes read, which this halves against bf16.
No host sync: CUDA-graph safe.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm_triton.kernels._common import cdiv, check_tensor, tanh
from litevllm_triton.kernels.fused_moe import ACTIVATIONS, get_config, moe_sum, route_and_align

from litevllm_fp8.kernels._device import FP8_DTYPES
from litevllm_fp8.kernels._e4m3 import E4M3_BITS_SCALE, e4m3_bits_to_f16, native_fp8


@triton.jit
def _moe_fp8_gemm_kernel(a_ptr, b_ptr, s_ptr, c_ptr, rows_ptr, block_expert_ptr, weights_ptr,
                         num_rows, num_blocks, num_experts, N, K, a_div, GROUP_K,
                         stride_am, stride_be, stride_bn, stride_se, stride_sn, stride_cm,
                         GATED: tl.constexpr, ACT: tl.constexpr, WEIGHTED: tl.constexpr,
                         IEEE: tl.constexpr, NATIVE: tl.constexpr, W_SCALE: tl.constexpr,
                         BLOCKWISE: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         GROUP_M: tl.constexpr):
    """As litevllm_triton's ``_moe_gemm_kernel``, with B fp8 and scales ``s [E, rows of B,
    KB]`` per row and GROUP_K columns: ``C[row] = A[row // a_div] @ (B[e] * s[e])^T`` (GATED:
    act(gate) * up). KB = 1 scales after the K loop; BLOCKWISE scales each tile (BLOCK_K
    divides GROUP_K). NATIVE: B is float8e4nv; else its uint8 bits, = value / W_SCALE."""
    pid = tl.program_id(0)
    num_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_n
    first_m = (pid // group) * GROUP_M
    size_m = tl.minimum(num_blocks - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % size_m
    pid_n = (pid % group) // size_m

    expert = tl.load(block_expert_ptr + pid_m)
    if expert >= num_experts:  # padding block past the last expert's rows
        return
    rows = tl.load(rows_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    valid = rows < num_rows
    rows = rows.to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + (rows // a_div)[:, None] * stride_am + offs_k[None, :]
    b_ptrs = (b_ptr + expert.to(tl.int64) * stride_be + offs_n.to(tl.int64)[None, :] * stride_bn
              + offs_k[:, None])
    s_rows = s_ptr + expert.to(tl.int64) * stride_se + offs_n * stride_sn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = offs_k < K - k0
        a = tl.load(a_ptrs, mask=valid[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if not NATIVE:
            b = e4m3_bits_to_f16(b)
        if BLOCKWISE:
            sb = tl.load(s_rows + k0 // GROUP_K, mask=n_ok, other=0.0) * W_SCALE
            b = b.to(tl.float32) * sb[None, :]
        b = b.to(a.dtype)
        if IEEE:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
        if GATED:
            u = tl.load(b_ptrs + N * stride_bn, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            if not NATIVE:
                u = e4m3_bits_to_f16(u)
            if BLOCKWISE:
                su = tl.load(s_rows + N * stride_sn + k0 // GROUP_K, mask=n_ok, other=0.0)
                u = u.to(tl.float32) * (su * W_SCALE)[None, :]
            u = u.to(a.dtype)
            if IEEE:
                acc_up = tl.dot(a, u, acc_up, input_precision="ieee")
            else:
                acc_up = tl.dot(a, u, acc_up)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    if not BLOCKWISE:
        acc = acc * (tl.load(s_rows, mask=n_ok, other=0.0) * W_SCALE)[None, :]
        if GATED:
            su = tl.load(s_rows + N * stride_sn, mask=n_ok, other=0.0)
            acc_up = acc_up * (su * W_SCALE)[None, :]
    if GATED:
        if ACT == 0:
            acc = acc / (1.0 + tl.exp(-acc)) * acc_up
        else:
            acc = 0.5 * acc * (1.0 + tanh(0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)))
            acc = acc * acc_up
    if WEIGHTED:
        acc = acc * tl.load(weights_ptr + rows, mask=valid, other=0.0)[:, None]
    c_ptrs = c_ptr + rows[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=valid[:, None] & n_ok[None, :])


def _gemm(a, w, s, group_k, c, rows, block_expert, weights, block_m, tile, gated, native,
          act=0, a_div=1):
    num_blocks, n_out = block_expert.shape[0], c.shape[1]
    blockwise = s.shape[2] > 1
    if blockwise:  # a K tile must not straddle two scale groups
        tile = {**tile, "BLOCK_K": min(tile["BLOCK_K"], group_k & -group_k)}
    _moe_fp8_gemm_kernel[(num_blocks * cdiv(n_out, tile["BLOCK_N"]),)](
        a, w, s, c, rows, block_expert, weights, c.shape[0], num_blocks, w.shape[0], n_out,
        a.shape[1], a_div, group_k, a.stride(0), w.stride(0), w.stride(1), s.stride(0),
        s.stride(1), c.stride(0), GATED=gated, ACT=act, WEIGHTED=not gated,
        IEEE=a.dtype == torch.float32, NATIVE=native, W_SCALE=1.0 if native else E4M3_BITS_SCALE,
        BLOCKWISE=blockwise, BLOCK_M=block_m, **tile)


def fused_moe_fp8(hidden: torch.Tensor, w13: torch.Tensor, w13_scale: torch.Tensor,
                  w2: torch.Tensor, w2_scale: torch.Tensor, router_logits: torch.Tensor,
                  top_k: int, renormalize: bool, activation: str = "silu",
                  config: dict | None = None, native: bool | None = None,
                  block_k: int | None = None, shared: torch.Tensor | None = None,
                  shared_gate: torch.Tensor | None = None) -> torch.Tensor:
    """hidden [T, H]; fp8 w13 [E, 2I, H] and w2 [E, H, I] with float32 scales per row
    (``[E, rows]`` or ``[E, rows, 1]``) or per row and ``block_k`` columns (``[E, rows,
    ceil(K / block_k)]``); router_logits [T, E] -> [T, H] (softmax top-k routing as the
    unquantized op). ``native`` False decodes the e4m3 bits with integer ops (None: by
    device). ``shared`` / ``shared_gate``: as ``fused_moe``'s (added in the final sum)."""
    check_tensor("hidden", hidden, 2)
    dev = hidden.device
    t, h = hidden.shape
    e, two_i, _ = w13.shape
    if tuple(w13.shape) != (e, two_i, h) or tuple(w2.shape) != (e, h, two_i // 2):
        raise ValueError(f"w13 must be [E, 2I, H={h}] and w2 [E, H, I], got "
                         f"{tuple(w13.shape)} and {tuple(w2.shape)}")
    scales = []
    for name, w, s in (("w13", w13, w13_scale), ("w2", w2, w2_scale)):
        check_tensor(name, w, 3, dtypes=FP8_DTYPES, device=dev)
        check_tensor(f"{name}_scale", s, None, dtypes=(torch.float32,), device=dev)
        s = s[..., None] if s.dim() == 2 else s
        k = w.shape[2]
        kb = 1 if block_k is None else cdiv(k, block_k)
        if tuple(s.shape) != (*w.shape[:2], kb):
            raise ValueError(f"{name}_scale must be {(*w.shape[:2], kb)}, got "
                             f"{tuple(s.shape)}")
        scales.append((s, k if kb == 1 else block_k))
    check_tensor("router_logits", router_logits, 2, device=dev, contiguous_last=False)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    inter = two_i // 2
    if t == 0:
        return torch.empty_like(hidden)
    cfg = config or get_config(t, e, inter, h, hidden.dtype, dev)
    bm = cfg["BLOCK_M"]
    weights, rows, block_expert = route_and_align(router_logits, top_k, renormalize, bm)
    native = native_fp8(dev) if native is None else native
    as_w = torch.float8_e4m3fn if native else torch.uint8
    w13, w2 = w13.view(as_w), w2.view(as_w)
    act = torch.empty(t * top_k, inter, dtype=hidden.dtype, device=dev)
    _gemm(hidden, w13, *scales[0], act, rows, block_expert, weights, bm, cfg["up"], True, native,
          ACTIVATIONS[activation], top_k)
    out = torch.empty(t * top_k, h, dtype=hidden.dtype, device=dev)
    _gemm(act, w2, *scales[1], out, rows, block_expert, weights, bm, cfg["down"], False, native)
    return moe_sum(out.view(t, top_k, h), shared, shared_gate)
