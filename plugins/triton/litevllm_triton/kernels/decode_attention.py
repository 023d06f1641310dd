"""Split-KV flash decoding over the paged KV cache: every sequence has one query token.

Stage 1: program (seq, kv head, split) attends the GROUP query heads of that KV head (padded to
16 rows for tl.dot) to its share of the context and writes partial (max, sum, acc). Stage 2
merges the splits; with one split, stage 1 writes the output itself and there is no stage 2.
Head dims that are not powers of 2 are padded to the next one with masks. The split count
depends only on shapes (batch size, heads, block-table width), never on per-step values, so the
launch is CUDA-graph safe; it is a run-time value, so one compiled kernel serves every batch
size. Splits past a sequence's end write neutral partials (max -1e30, sum 0, acc 0).
A float8 cache is read as int32 words converted to float16 in registers (dots in float16 for
16-bit q), with k_scale folded into the softmax scale and v_scale applied to the partial output.
An optional ``order`` (the batch's rows, longest context first: ``decode_order``) makes the GPU
start the longest programs first, so that no long sequence runs alone at the end of the launch
(list scheduling).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from litevllm_triton.kernels._common import (cdiv, check_attention_inputs, check_tensor, dot,
                                             f16_dots, is_pow2, kv_operands, load_fp8_tile,
                                             next_pow2, padded_head_dim, pdl_enabled, pdl_trigger,
                                             tanh)

# Measured on an H100: ~4 waves of few, long programs beat many short ones (B8 ctx8192: 8 splits
# 0.82 of copy bandwidth, 32 splits < 0.78); head_dim 256 runs fewer programs per SM.
TARGET_PROGRAMS = {128: 512, 256: 1024}
# LITEVLLM_DECODE_PROGRAMS=N overrides the target for every head dim (tuning runs)
PROGRAMS_OVERRIDE = int(os.environ.get("LITEVLLM_DECODE_PROGRAMS", "0") or 0)
MIN_SPLIT_TOKENS = 256  # don't split a full-length context finer than this
MAX_SPLITS = 64


@triton.jit(do_not_specialize=["stride_bt"])  # block-table width: varies per eager step
def _decode_split_kernel(q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr,
                         order_ptr, part_m_ptr, part_l_ptr, part_acc_ptr, out_ptr,
                         stride_qt, stride_qh, stride_cb, stride_cs, stride_ch, stride_bt,
                         stride_ot, stride_oh, num_heads, scale, v_scale, softcap, window,
                         GROUP: tl.constexpr, BLOCK_H: tl.constexpr, HEAD_DIM: tl.constexpr,
                         BLOCK_D: tl.constexpr, PAGE: tl.constexpr, BLOCK_N: tl.constexpr,
                         USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr,
                         SINGLE: tl.constexpr, IEEE: tl.constexpr, F16: tl.constexpr,
                         FP8: tl.constexpr, ORDERED: tl.constexpr, PDL: tl.constexpr):
    pdl_trigger(PDL)  # the next kernel (o_proj's GEMV) may start streaming its weights
    num_kv_heads = num_heads // GROUP
    kv_head = tl.program_id(0) % num_kv_heads  # a sequence's heads launch together
    b = tl.program_id(0) // num_kv_heads
    if ORDERED:  # launch rank -> batch row
        b = tl.load(order_ptr + b).to(tl.int32)
    split = tl.program_id(1)
    num_splits = tl.num_programs(1)  # not a constexpr: one compiled kernel for every bucket

    seq_len = tl.load(seq_lens_ptr + b)
    kv_lo = seq_len * 0
    if USE_WINDOW:
        kv_lo = tl.maximum(seq_len - window, 0)
    split_len = tl.cdiv(tl.cdiv(seq_len - kv_lo, num_splits), BLOCK_N) * BLOCK_N
    start = kv_lo + split * split_len
    end = tl.minimum(start + split_len, seq_len)

    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM  # head dims padded to a power of 2 read as zeros
    head = kv_head * GROUP + offs_h
    h_ok = offs_h < GROUP
    q = tl.load(q_ptr + b.to(tl.int64) * stride_qt + (head * stride_qh)[:, None] + offs_d[None, :],
                mask=h_ok[:, None] & d_ok[None, :], other=0.0)
    if F16:  # float8 cache: float16 dots (_common.f16_dots)
        q = q.to(tl.float16)

    bt_row = block_tables_ptr + b.to(tl.int64) * stride_bt
    k_base = k_cache_ptr + kv_head * stride_ch
    v_base = v_cache_ptr + kv_head * stride_ch
    m_i = tl.full([BLOCK_H], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < end
        page = tl.load(bt_row + offs_n // PAGE, mask=n_ok, other=0).to(tl.int64)
        row = page * stride_cb + (offs_n % PAGE) * stride_cs
        if FP8:  # int32 words of four float8 bytes
            k = load_fp8_tile(k_base, row, n_ok, HEAD_DIM, BLOCK_N, BLOCK_D).to(q.dtype)
            v = load_fp8_tile(v_base, row, n_ok, HEAD_DIM, BLOCK_N, BLOCK_D).to(q.dtype)
        else:
            kv_off = row[:, None] + offs_d[None, :]
            kv_ok = n_ok[:, None] & d_ok[None, :]
            k = tl.load(k_base + kv_off, mask=kv_ok, other=0.0)
            v = tl.load(v_base + kv_off, mask=kv_ok, other=0.0)
        s = dot(q, tl.trans(k), IEEE)
        if USE_SOFTCAP:
            s = softcap * tanh(s * (scale / softcap)) * 1.4426950408889634
        else:
            s = s * (scale * 1.4426950408889634)
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + dot(p.to(v.dtype), v, IEEE)
        m_i = m_new
    acc = acc * v_scale  # float8 caches hold v / v_scale (1.0 otherwise)

    if SINGLE:  # one split: normalise and write the output, no merge kernel
        o = acc / tl.maximum(l_i, 1e-30)[:, None]  # empty sequence -> 0
        o_ptrs = out_ptr + b.to(tl.int64) * stride_ot + (head * stride_oh)[:, None] \
            + offs_d[None, :]
        tl.store(o_ptrs, o.to(out_ptr.dtype.element_ty), mask=h_ok[:, None] & d_ok[None, :])
    else:  # partials laid out [B, H, num_splits(, D)]
        part = (b * num_heads + head).to(tl.int64) * num_splits + split
        tl.store(part_m_ptr + part, m_i, mask=h_ok)
        tl.store(part_l_ptr + part, l_i, mask=h_ok)
        tl.store(part_acc_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], acc,
                 mask=h_ok[:, None] & d_ok[None, :])


@triton.jit
def _decode_merge_kernel(part_m_ptr, part_l_ptr, part_acc_ptr, out_ptr, stride_ot, stride_oh,
                         num_heads, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                         NUM_SPLITS: tl.constexpr, PDL: tl.constexpr):
    pdl_trigger(PDL)
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, NUM_SPLITS)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    part = (b * num_heads + h).to(tl.int64) * NUM_SPLITS + offs_s
    m = tl.load(part_m_ptr + part)
    l = tl.load(part_l_ptr + part)
    acc = tl.load(part_acc_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], mask=d_ok[None, :],
                  other=0.0)
    w = tl.exp2(m - tl.max(m, axis=0))  # empty splits: exp2(-1e30 - max) = 0
    l_sum = tl.sum(w * l, axis=0)
    o = tl.sum(w[:, None] * acc, axis=0) / tl.maximum(l_sum, 1e-30)  # empty sequence -> 0
    tl.store(out_ptr + b.to(tl.int64) * stride_ot + h * stride_oh + offs_d,
             o.to(out_ptr.dtype.element_ty), mask=d_ok)


@triton.jit(do_not_specialize=["n"])
def _decode_order_kernel(seq_lens_ptr, order_ptr, n, BLOCK_I: tl.constexpr,
                         BLOCK_J: tl.constexpr):
    """order[rank(i)] = i, where rank(i) counts the rows longer than row i and the equal rows
    before it: a stable longest-first sort by counting."""
    offs_i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    i_ok = offs_i < n
    len_i = tl.load(seq_lens_ptr + offs_i, mask=i_ok, other=0)[:, None]
    rank = tl.zeros([BLOCK_I], tl.int32)
    for j0 in range(0, n, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        len_j = tl.load(seq_lens_ptr + offs_j, mask=offs_j < n, other=-1)[None, :]
        ahead = (len_j > len_i) | ((len_j == len_i) & (offs_j[None, :] < offs_i[:, None]))
        rank += tl.sum(ahead.to(tl.int32), axis=1)
    tl.store(order_ptr + rank, offs_i, mask=i_ok)


def decode_order(seq_lens: torch.Tensor) -> torch.Tensor:
    """The rows of a decode batch, longest context first (ties in row order), as int32: one
    kernel, no host synchronisation (CUDA-graph safe). ``decode_attention(order=...)`` takes it."""
    check_tensor("seq_lens", seq_lens, 1, dtypes=(torch.int32,))
    n = seq_lens.shape[0]
    order = torch.empty(n, dtype=torch.int32, device=seq_lens.device)
    if n:
        _decode_order_kernel[(cdiv(n, 32),)](seq_lens, order, n, BLOCK_I=32, BLOCK_J=256)
    return order


# tokens per tile, warps and pipeline stages of the split kernel (H100-class GPU, any head dim)
BLOCK_N, NUM_WARPS, NUM_STAGES = 64, 4, 3
# one split (large batches): twice the tokens per tile, head dims up to 128 (shared memory);
# H200 sweep at 256 sequences: TinyLlama 91.7 -> 86.6 us, Qwen3-0.6B 278 -> 269 us
BLOCK_N_SINGLE = 128
# (float8 caches too: with the longest-first order the 128-token tile beats 256 at head dim 64,
# H200 TinyLlama b256 60.2 against 64.8 us)
# float32 (exact IEEE products, for parity tests): half the tile, no pipelining (shared memory)
FP32_BLOCK_N, FP32_NUM_STAGES = 32, 1


def num_decode_splits(num_seqs: int, num_kv_heads: int, max_context: int,
                      head_dim: int = 128) -> int:
    """Power-of-2 split count from static shapes only (CUDA-graph safe)."""
    target = PROGRAMS_OVERRIDE or TARGET_PROGRAMS[128 if padded_head_dim(head_dim) <= 128 else 256]
    want = cdiv(target, max(1, num_seqs * num_kv_heads))
    cap = max(1, max_context // MIN_SPLIT_TOKENS)
    splits = min(want, cap, MAX_SPLITS)
    return 1 << max(0, splits.bit_length() - 1)  # round down to a power of 2


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     block_tables: torch.Tensor, seq_lens: torch.Tensor, scale: float,
                     sliding_window: int | None = None, logit_softcap: float | None = None,
                     out: torch.Tensor | None = None, num_splits: int | None = None,
                     k_scale: float = 1.0, v_scale: float = 1.0,
                     order: torch.Tensor | None = None) -> torch.Tensor:
    """One query token per sequence: q [B, H, D] over caches [num_blocks, block_size, Hkv, D]
    of q's dtype or float8 (holding k / k_scale, v / v_scale).

    block_tables [B, max_blocks] int32, seq_lens [B] int32 (including the current token;
    0 gives a zero output). ``num_splits`` (power of 2) defaults to a choice from static
    shapes. ``order`` [B] (int32/int64, a permutation of the rows, longest context first)
    sets the launch order; the output is the same. Writes and returns ``out`` [B, H, D]. No
    host synchronisation.
    """
    out = check_attention_inputs(q, k_cache, v_cache, block_tables, seq_lens, seq_lens.shape[0],
                                 sliding_window, logit_softcap, out, k_scale, v_scale)
    b, h, d = q.shape
    if seq_lens.shape[0] != b:
        raise ValueError(f"decode needs one query row per sequence: q has {b} rows, "
                         f"seq_lens has {seq_lens.shape[0]} entries")
    dev, page, hkv = k_cache.device, k_cache.shape[1], k_cache.shape[2]
    if num_splits is None:
        num_splits = num_decode_splits(b, hkv, block_tables.shape[1] * page, d)
    if not is_pow2(num_splits):
        raise ValueError(f"num_splits must be a power of 2, got {num_splits}")
    if order is not None:
        check_tensor("order", order, 1, dtypes=(torch.int32, torch.int64), device=dev)
        if order.shape[0] != b:
            raise ValueError(f"order has {order.shape[0]} entries for {b} sequences")
    if b == 0:
        return out

    group, block_d = h // hkv, padded_head_dim(d)
    single = num_splits == 1
    fp32 = q.dtype == torch.float32
    block_n, stages = (FP32_BLOCK_N, FP32_NUM_STAGES) if fp32 else (BLOCK_N, NUM_STAGES)
    kc, vc, fp8 = kv_operands(k_cache, v_cache)
    if single and not fp32 and block_d <= 128:
        block_n = BLOCK_N_SINGLE
    part_m = torch.empty((b, h, num_splits), dtype=torch.float32, device=dev)
    part_l = torch.empty_like(part_m)
    part_acc = out if single else torch.empty((b, h, num_splits, d), dtype=torch.float32,
                                              device=dev)
    _decode_split_kernel[(b * hkv, num_splits)](
        q, kc, vc, block_tables, seq_lens, seq_lens if order is None else order, part_m, part_l,
        part_acc, out,
        q.stride(0), q.stride(1), kc.stride(0), kc.stride(1), kc.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1), h, float(scale) * k_scale,
        float(v_scale), float(logit_softcap or 1.0), int(sliding_window or 0),
        GROUP=group, BLOCK_H=max(16, next_pow2(group)), HEAD_DIM=d,
        BLOCK_D=block_d, PAGE=page, BLOCK_N=block_n, USE_WINDOW=bool(sliding_window),
        USE_SOFTCAP=bool(logit_softcap), SINGLE=single, IEEE=fp32,
        F16=f16_dots(q.dtype, k_cache.dtype), FP8=fp8, ORDERED=order is not None,
        PDL=pdl_enabled(dev), num_warps=NUM_WARPS,
        num_stages=stages)
    if single:
        return out
    _decode_merge_kernel[(b, h)](part_m, part_l, part_acc, out, out.stride(0), out.stride(1), h,
                                 HEAD_DIM=d, BLOCK_D=block_d, NUM_SPLITS=num_splits,
                                 PDL=pdl_enabled(dev), num_warps=4)
    return out
