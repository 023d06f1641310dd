"""Variable-length causal flash attention over the paged KV cache (prefill, chunked prefill,
prefix-cache hits and decode rows in a mixed batch).

Sequence b owns query rows ``query_start_loc[b]:query_start_loc[b+1]`` at absolute positions
``seq_len - query_len .. seq_len - 1``; its keys (all already in the cache) are gathered through
its block table. One program handles one tile of BLOCK_Q query rows of one sequence for all
GROUP query heads that share a KV head: the M dimension of the tile is (query row, head in group),
so GQA/MQA reads each KV tile once and short (decode) rows still fill the matrix units.
A float8 cache is read as int32 words converted to float16 in registers (dots in float16 for
16-bit q), with k_scale folded into the softmax scale and v_scale applied to the output.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm_triton.kernels._common import (check_attention_inputs, check_tensor, dot, f16_dots,
                                             kv_operands, load_fp8_tile, next_pow2, padded_head_dim,
                                             tanh)


@triton.jit
def _attend_tile(acc, l_i, m_i, q, q_pos, start_n, bt_row, k_base, v_base,
                 stride_cb, stride_cs, kv_end, qk_scale, softcap, window,
                 PAGE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                 BLOCK_N: tl.constexpr, MASKED: tl.constexpr, USE_WINDOW: tl.constexpr,
                 USE_SOFTCAP: tl.constexpr, IEEE: tl.constexpr, FP8: tl.constexpr):
    """One online-softmax step over keys start_n .. start_n + BLOCK_N (log2 domain)."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    if MASKED:
        n_ok = offs_n < kv_end
        page = tl.load(bt_row + offs_n // PAGE, mask=n_ok, other=0).to(tl.int64)
    else:
        page = tl.load(bt_row + offs_n // PAGE).to(tl.int64)
    row = page * stride_cb + (offs_n % PAGE) * stride_cs
    kv_off = row[:, None] + offs_d[None, :]
    if FP8:  # int32 words of four float8 bytes
        k = load_fp8_tile(k_base, row, offs_n < kv_end, HEAD_DIM, BLOCK_N, BLOCK_D)
        v = load_fp8_tile(v_base, row, offs_n < kv_end, HEAD_DIM, BLOCK_N, BLOCK_D)
    elif MASKED:
        kv_ok = n_ok[:, None] & (offs_d < HEAD_DIM)[None, :]
        k = tl.load(k_base + kv_off, mask=kv_ok, other=0.0)
        v = tl.load(v_base + kv_off, mask=kv_ok, other=0.0)
    elif BLOCK_D != HEAD_DIM:  # padded head dims read as zeros
        k = tl.load(k_base + kv_off, mask=(offs_d < HEAD_DIM)[None, :], other=0.0)
        v = tl.load(v_base + kv_off, mask=(offs_d < HEAD_DIM)[None, :], other=0.0)
    else:
        k = tl.load(k_base + kv_off)
        v = tl.load(v_base + kv_off)
    k = k.to(q.dtype)  # float8 caches: float16 -> q's dtype
    v = v.to(q.dtype)

    s = dot(q, tl.trans(k), IEEE)
    if USE_SOFTCAP:
        s = softcap * tanh(s * (qk_scale / softcap)) * 1.4426950408889634
    else:
        s = s * (qk_scale * 1.4426950408889634)
    if MASKED:
        ok = offs_n[None, :] <= q_pos[:, None]
        if USE_WINDOW:
            ok = ok & (q_pos[:, None] - offs_n[None, :] < window)
        s = tl.where(ok, s, float("-inf"))

    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + dot(p.to(v.dtype), v, IEEE)
    return acc, l_i, m_new


# per-step values are not specialised on (==1, %16): one variant serves every batch shape
@triton.jit(do_not_specialize=["num_seqs", "stride_bt"])
def _prefill_kernel(q_ptr, k_cache_ptr, v_cache_ptr, out_ptr,
                    block_tables_ptr, query_start_loc_ptr, seq_lens_ptr, num_seqs,
                    stride_qt, stride_qh, stride_ot, stride_oh,
                    stride_cb, stride_cs, stride_ch, stride_bt,
                    scale, v_scale, softcap, window,
                    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                    PAGE: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
                    USE_WINDOW: tl.constexpr, USE_SOFTCAP: tl.constexpr, IEEE: tl.constexpr,
                    F16: tl.constexpr, FP8: tl.constexpr):
    tile = tl.num_programs(0) - 1 - tl.program_id(0)  # launch the longest (last) tiles first
    kv_head = tl.program_id(1)

    # Sequence b's query tiles are numbered from query_start_loc[b] // BLOCK_Q + b on; find the
    # last b whose first tile is <= this one (binary search, no host-side tile map needed).
    lo = tl.full([], 0, tl.int32)
    hi = lo + num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        go_right = tl.load(query_start_loc_ptr + mid) // BLOCK_Q + mid <= tile
        lo = tl.where(go_right, mid + 1, lo)
        hi = tl.where(go_right, hi, mid)
    b = lo - 1
    q_start = tl.load(query_start_loc_ptr + b)
    q_len = tl.load(query_start_loc_ptr + b + 1) - q_start
    q_tile = tile - (q_start // BLOCK_Q + b)
    if q_tile * BLOCK_Q >= q_len:
        return
    seq_len = tl.load(seq_lens_ptr + b)
    ctx_len = seq_len - q_len

    # rows of the tile: m -> (query row q_idx, head kv_head * GROUP + m % GROUP)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_idx = q_tile * BLOCK_Q + offs_m // GROUP
    head = kv_head * GROUP + offs_m % GROUP
    row_ok = (offs_m < BLOCK_Q * GROUP) & (q_idx < q_len)
    io_ok = row_ok[:, None] & (offs_d < HEAD_DIM)[None, :]
    q_pos = ctx_len + tl.minimum(q_idx, q_len - 1)  # padding rows copy the last real row
    q_rows = (q_start + q_idx).to(tl.int64)
    q = tl.load(q_ptr + (q_rows * stride_qt + head * stride_qh)[:, None] + offs_d[None, :],
                mask=io_ok, other=0.0)
    if F16:  # float8 cache: float16 dots (_common.f16_dots)
        q = q.to(tl.float16)

    # key range [kv_lo, kv_end) and its part [full_lo, full_hi) that needs no mask
    first_pos = ctx_len + q_tile * BLOCK_Q
    last_pos = ctx_len + tl.minimum(q_tile * BLOCK_Q + BLOCK_Q, q_len) - 1
    kv_end = last_pos + 1
    full_hi = (first_pos + 1) // BLOCK_N * BLOCK_N
    if USE_WINDOW:
        kv_lo = tl.maximum(first_pos - window + 1, 0) // BLOCK_N * BLOCK_N
        full_lo = tl.cdiv(tl.maximum(last_pos - window + 1, 0), BLOCK_N) * BLOCK_N
        full_hi = tl.maximum(full_hi, kv_lo)
        full_lo = tl.minimum(tl.maximum(full_lo, kv_lo), full_hi)
    else:
        kv_lo = full_hi * 0
        full_lo = kv_lo

    bt_row = block_tables_ptr + b.to(tl.int64) * stride_bt
    k_base = k_cache_ptr + kv_head * stride_ch
    v_base = v_cache_ptr + kv_head * stride_ch
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)  # finite: fully masked tiles stay NaN-free
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(kv_lo, full_lo, BLOCK_N):  # left edge of the sliding window
        acc, l_i, m_i = _attend_tile(acc, l_i, m_i, q, q_pos, start_n, bt_row, k_base, v_base,
                                     stride_cb, stride_cs, kv_end, scale, softcap, window,
                                     PAGE, HEAD_DIM, BLOCK_D, BLOCK_N, True, USE_WINDOW,
                                     USE_SOFTCAP, IEEE, FP8)
    for start_n in range(full_lo, full_hi, BLOCK_N):  # visible to every row
        acc, l_i, m_i = _attend_tile(acc, l_i, m_i, q, q_pos, start_n, bt_row, k_base, v_base,
                                     stride_cb, stride_cs, kv_end, scale, softcap, window,
                                     PAGE, HEAD_DIM, BLOCK_D, BLOCK_N, False, USE_WINDOW,
                                     USE_SOFTCAP, IEEE, FP8)
    for start_n in range(full_hi, kv_end, BLOCK_N):  # causal diagonal
        acc, l_i, m_i = _attend_tile(acc, l_i, m_i, q, q_pos, start_n, bt_row, k_base, v_base,
                                     stride_cb, stride_cs, kv_end, scale, softcap, window,
                                     PAGE, HEAD_DIM, BLOCK_D, BLOCK_N, True, USE_WINDOW,
                                     USE_SOFTCAP, IEEE, FP8)

    out = acc * v_scale / l_i[:, None]  # float8 caches hold v / v_scale (1.0 otherwise)
    o_ptrs = out_ptr + (q_rows * stride_ot + head * stride_oh)[:, None] + offs_d[None, :]
    tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=io_ok)


def _config(block_d: int, group: int, max_query_len: int, fp32: bool = False,
            fp8: bool = False) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for a padded head dim. Head dims up to 128
    (float8 caches: up to 64): the best tile of ``benchmarks/tune_prefill_attention.py`` on an
    H200 (2,048-token and 4 x 512-token prompts, mixed steps; head dim 64 and 128, GQA groups
    2-8). Float8 caches at head dim 128 (the new tile lost 10% on Qwen3's shape there) and wider
    heads keep the H100's 8-warp tile. float32 (exact IEEE products, for parity tests) takes
    smaller tiles, unpipelined, to fit in shared memory."""
    tuned = not fp32 and block_d <= (64 if fp8 else 128)
    # short batches (decodes, small chunks) use a smaller tile; tl.dot needs M >= 16
    block_m = min(64 if fp32 or tuned else 128, max(16, next_pow2(max_query_len * group)))
    block_m = max(block_m, next_pow2(group))
    if tuned:
        return block_m, 64, 4, 2
    block_n = 32 if fp32 else 128 if block_d == 128 else 64
    return block_m, block_n, 8 if block_m >= 64 else 4, 1 if fp32 else 3


def prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      block_tables: torch.Tensor, query_start_loc: torch.Tensor,
                      seq_lens: torch.Tensor, max_query_len: int, scale: float,
                      sliding_window: int | None = None, logit_softcap: float | None = None,
                      out: torch.Tensor | None = None, k_scale: float = 1.0,
                      v_scale: float = 1.0) -> torch.Tensor:
    """Causal attention of q [T, H, D] over caches [num_blocks, block_size, Hkv, D] of q's dtype
    or float8 (holding k / k_scale, v / v_scale).

    block_tables [B, max_blocks] int32, query_start_loc [B+1] int32, seq_lens [B] int32
    (context length including this step's tokens). ``max_query_len`` only sizes the tiles.
    Writes and returns ``out`` [T, H, D] (allocated if None).
    """
    num_seqs = seq_lens.shape[0]
    out = check_attention_inputs(q, k_cache, v_cache, block_tables, seq_lens, num_seqs,
                                 sliding_window, logit_softcap, out, k_scale, v_scale)
    check_tensor("query_start_loc", query_start_loc, 1, dtypes=(torch.int32,), device=q.device)
    if query_start_loc.shape[0] != num_seqs + 1:
        raise ValueError(f"query_start_loc has {query_start_loc.shape[0]} entries, "
                         f"expected {num_seqs + 1}")
    t, h, d = q.shape
    page, hkv = k_cache.shape[1], k_cache.shape[2]
    if t == 0 or num_seqs == 0:
        return out

    group = h // hkv
    block_d = padded_head_dim(d)
    kc, vc, fp8 = kv_operands(k_cache, v_cache)
    fp32 = q.dtype == torch.float32
    block_m, block_n, warps, stages = _config(block_d, group, max(1, int(max_query_len)), fp32,
                                              fp8)
    block_q = block_m // group
    grid = (t // block_q + num_seqs, hkv)  # upper bound on sum_b cdiv(query_len_b, BLOCK_Q)
    _prefill_kernel[grid](
        q, kc, vc, out, block_tables, query_start_loc, seq_lens, num_seqs,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        kc.stride(0), kc.stride(1), kc.stride(2), block_tables.stride(0),
        float(scale) * k_scale, float(v_scale), float(logit_softcap or 1.0),
        int(sliding_window or 0),
        GROUP=group, HEAD_DIM=d, BLOCK_D=block_d, PAGE=page, BLOCK_M=block_m, BLOCK_Q=block_q,
        BLOCK_N=block_n,
        USE_WINDOW=bool(sliding_window), USE_SOFTCAP=bool(logit_softcap),
        IEEE=fp32, F16=f16_dots(q.dtype, k_cache.dtype), FP8=fp8, num_warps=warps,
        num_stages=stages)
    return out
