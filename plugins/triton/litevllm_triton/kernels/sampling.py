"""Fused sampling without sorting: temperature, top-k, top-p, min-p and the seeded Gumbel-max
draw of ``torch_ops.sample``, one program per row streaming the logits in chunks.

The kept set is every token with ``s = logit / temperature`` at or above a threshold (see
``torch_ops.filter_logits``). Top-k's threshold comes from a bisection on values snapped to
the row's own values (top-k rows only). Top-p and min-p need no threshold: the Gumbel-max draw
over the tokens above a pivot is tested for membership (one pass: the mass above it), and a
rejected draw becomes the next pivot, as every kept token lies above it. The accepted draw is
the Gumbel-max draw over the kept set with ``torch_ops.uniform_noise``'s noise, bit for bit.
A top-p row usually takes the draw's pass and one cheaper pass (the mass above the draw).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm_triton.kernels._common import check_tensor, log_ieee, next_pow2

CHUNK = 2048  # logits per program step


@triton.jit
def _fmix32(x):
    """murmur3's finalizer on uint32."""
    x ^= x >> 16
    x *= 0x85EBCA6B
    x ^= x >> 13
    x *= 0xC2B2AE35
    return x ^ (x >> 16)


@triton.jit
def _row_key(seed, step):
    """The row part of ``uniform_noise``'s hash from int64 seed and step (only the low 32 bits
    of its int64 terms matter)."""
    lo = (seed & 0xFFFFFFFF).to(tl.uint32)
    hi = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    st = (step & 0xFFFFFFFF).to(tl.uint32)
    return _fmix32(_fmix32(lo) ^ hi ^ (st * 0x9E3779B1))


@triton.jit
def _uniform(key, cols):
    """``uniform_noise`` at token ids ``cols`` of the row with hash ``key``: (0, 1) float32."""
    x = _fmix32(cols.to(tl.uint32) * 0x27D4EB2F + key)
    x = _fmix32(x ^ key)
    return ((x >> 9).to(tl.float32) + 0.5) * (1.0 / 8388608.0)


@triton.jit
def _scaled(base, cols, V, temp):
    """logit / temperature (IEEE division, as torch's), -inf past the row's end."""
    x = tl.load(base + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
    return tl.math.div_rn(x, temp)


@triton.jit
def _first_max(best, idx, V):
    """The lowest index holding the maximum of per-lane (best, idx) pairs."""
    return tl.min(tl.where(best == tl.max(best, 0), idx, V), 0)


@triton.jit
def _noise_kernel(seed_ptr, step_ptr, out_ptr, V, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    key = _row_key(tl.load(seed_ptr + row), tl.load(step_ptr + row))
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        tl.store(out_ptr + row.to(tl.int64) * V + cols, _uniform(key, cols), mask=cols < V)


@triton.jit
def _top_k_threshold(base, V, temp, k, lo, hi, BLOCK: tl.constexpr):
    """The k-th largest s from lo (a row value with at least k values at or above it) and hi
    (the row's max). Each pass halves [lo, hi] by value and snaps both ends to row values, so
    it ends when they meet."""
    offs = tl.arange(0, BLOCK)
    while lo < hi:
        mid = lo * 0.5 + hi * 0.5
        mid = tl.where(mid > lo, mid, hi)
        count = tl.zeros([BLOCK], tl.int32)
        above = tl.full([BLOCK], float("inf"), tl.float32)    # min of s >= mid
        below = tl.full([BLOCK], float("-inf"), tl.float32)   # max of s < mid
        for start in range(0, V, BLOCK):
            s = _scaled(base, start + offs, V, temp)
            ge = s >= mid
            count += ge.to(tl.int32)
            above = tl.where(ge, tl.minimum(above, s), above)
            below = tl.where(ge, below, tl.maximum(below, s))
        if tl.sum(count, 0) >= k:
            lo = tl.min(above, 0)
        else:
            hi = tl.max(below, 0)
    return lo


@triton.jit
def _draw(base, V, temp, key, pivot, tau, m, log_min_p, BLOCK: tl.constexpr):
    """The Gumbel-max draw over the tokens with pivot < s, tau <= s, log_min_p <= s - m."""
    offs = tl.arange(0, BLOCK)
    best = tl.full([BLOCK], float("-inf"), tl.float32)
    best_i = tl.zeros([BLOCK], tl.int32)
    for start in range(0, V, BLOCK):
        cols = start + offs
        s = _scaled(base, cols, V, temp)
        cand = (s > pivot) & (s >= tau) & (s - m >= log_min_p)
        g = tl.where(cand, s - log_ieee(-log_ieee(_uniform(key, cols))), float("-inf"))
        new = g > best
        best = tl.where(new, g, best)
        best_i = tl.where(new, cols, best_i)
    return _first_max(best, best_i, V)


@triton.jit
def _in_nucleus(base, V, temp, sx, tau, m, top_p, BLOCK: tl.constexpr):
    """Whether the mass of the tokens above sx is at most top_p of the mass at or above tau."""
    offs = tl.arange(0, BLOCK)
    above = tl.zeros([BLOCK], tl.float32)
    total = tl.zeros([BLOCK], tl.float32)
    for start in range(0, V, BLOCK):
        s = _scaled(base, start + offs, V, temp)
        e = tl.where(s >= tau, tl.exp(s - m), 0.0)
        above += tl.where(s > sx, e, 0.0)
        total += e
    return tl.sum(above, 0) <= top_p * tl.sum(total, 0)


@triton.jit
def _sample_kernel(logits_ptr, stride, temp_ptr, top_k_ptr, top_p_ptr, min_p_ptr, greedy_ptr,
                   seed_ptr, step_ptr, out_ptr, V, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = logits_ptr + row.to(tl.int64) * stride
    offs = tl.arange(0, BLOCK)
    NEG: tl.constexpr = float("-inf")
    if tl.load(greedy_ptr + row) != 0:
        best = tl.full([BLOCK], NEG, tl.float32)
        best_i = tl.zeros([BLOCK], tl.int32)
        for start in range(0, V, BLOCK):
            cols = start + offs
            x = tl.load(base + cols, mask=cols < V, other=NEG).to(tl.float32)
            new = x > best
            best = tl.where(new, x, best)
            best_i = tl.where(new, cols, best_i)
        token = _first_max(best, best_i, V)
    else:
        temp = tl.load(temp_ptr + row)
        key = _row_key(tl.load(seed_ptr + row), tl.load(step_ptr + row))
        # pass 1: max, finite min and count, the unfiltered draw
        mx = tl.full([BLOCK], NEG, tl.float32)
        mn = tl.full([BLOCK], float("inf"), tl.float32)
        finite = tl.zeros([BLOCK], tl.int32)
        best = tl.full([BLOCK], NEG, tl.float32)
        best_i = tl.zeros([BLOCK], tl.int32)
        for start in range(0, V, BLOCK):
            cols = start + offs
            s = _scaled(base, cols, V, temp)
            mx = tl.maximum(mx, s)
            fin = s > NEG
            mn = tl.where(fin, tl.minimum(mn, s), mn)
            finite += fin.to(tl.int32)
            g = s - log_ieee(-log_ieee(_uniform(key, cols)))
            new = g > best
            best = tl.where(new, g, best)
            best_i = tl.where(new, cols, best_i)
        m = tl.max(mx, 0)
        token = _first_max(best, best_i, V)
        k = tl.load(top_k_ptr + row)
        tau = tl.full([], NEG, tl.float32)
        if (k > 0) & (k < tl.sum(finite, 0)):
            tau = _top_k_threshold(base, V, temp, k, tl.min(mn, 0), m, BLOCK)
        top_p = tl.load(top_p_ptr + row)
        min_p = tl.load(min_p_ptr + row)
        log_min_p = tl.where(min_p > 0, log_ieee(tl.maximum(min_p, 1e-38)), NEG)
        # a draw outside the kept set is the pivot of the next: every kept token lies above it
        sx = tl.math.div_rn(tl.load(base + token).to(tl.float32), temp)
        ok = (sx >= tau) & (sx - m >= log_min_p)
        accept = (ok & (top_p >= 1.0)) | (m == NEG)  # no finite logit: the first draw (0)
        rounds = tl.full([], 0, tl.int32)
        while (accept == 0) & (rounds < V):
            if ok:
                accept = _in_nucleus(base, V, temp, sx, tau, m, top_p, BLOCK)
            if accept == 0:
                token = _draw(base, V, temp, key, sx, tau, m, log_min_p, BLOCK)
                sx = tl.math.div_rn(tl.load(base + token).to(tl.float32), temp)
                ok = (sx >= tau) & (sx - m >= log_min_p)
                accept = ok & (top_p >= 1.0)
            rounds += 1
    tl.store(out_ptr + row, token.to(tl.int64))


def _check_rows(logits: torch.Tensor, **rows: tuple) -> None:
    b = logits.shape[0]
    for name, (t, dtypes) in rows.items():
        check_tensor(name, t, 1, dtypes=dtypes, device=logits.device)
        if t.shape[0] != b:
            raise ValueError(f"{name} has {t.shape[0]} rows, logits {b}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
           top_p: torch.Tensor, min_p: torch.Tensor, greedy: torch.Tensor, seeds: torch.Tensor,
           steps: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """``torch_ops.sample`` fused: tokens [B] int64 (top_k 0 or >= V: off; top_p in (0, 1];
    min_p in [0, 1]). ``chunk``: logits per step of a pass, a power of 2."""
    check_tensor("logits", logits, 2)
    ints = (torch.int32, torch.int64)
    _check_rows(logits, temperature=(temperature, (torch.float32,)), top_k=(top_k, ints),
                top_p=(top_p, (torch.float32,)), min_p=(min_p, (torch.float32,)),
                greedy=(greedy, (torch.bool,)), seeds=(seeds, (torch.int64,)),
                steps=(steps, (torch.int64,)))
    b, v = logits.shape
    if chunk < 16 or chunk & (chunk - 1):
        raise ValueError(f"chunk must be a power of 2 >= 16, got {chunk}")
    if v >= 2**31 - chunk:
        raise ValueError(f"vocab size {v} is too large")
    out = torch.empty(b, dtype=torch.int64, device=logits.device)
    if b:
        _sample_kernel[(b,)](logits, logits.stride(0), temperature, top_k, top_p, min_p,
                             greedy.view(torch.uint8), seeds, steps, out, v, BLOCK=chunk,
                             num_warps=8 if chunk >= 2048 else 4)
    return out


def uniform_noise(seeds: torch.Tensor, steps: torch.Tensor, vocab: int) -> torch.Tensor:
    """``torch_ops.uniform_noise`` computed by the kernels' hash (for tests)."""
    check_tensor("seeds", seeds, 1, dtypes=(torch.int64,))
    check_tensor("steps", steps, 1, dtypes=(torch.int64,), device=seeds.device)
    if steps.shape != seeds.shape:
        raise ValueError(f"steps {tuple(steps.shape)} and seeds {tuple(seeds.shape)} differ")
    out = torch.empty(seeds.shape[0], vocab, dtype=torch.float32, device=seeds.device)
    if seeds.shape[0] and vocab:
        _noise_kernel[(seeds.shape[0],)](seeds.contiguous(), steps.contiguous(), out, vocab,
                                         BLOCK=min(CHUNK, next_pow2(vocab)))
    return out
