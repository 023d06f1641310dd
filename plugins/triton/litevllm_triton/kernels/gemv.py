"""Skinny GEMM for decode rows (M <= 256): out = x @ W^T (+ bias), W [N, K] with K contiguous.

Gated (the MLP's gate_up): W stacks gate rows [0, N) and up rows [N, 2N); the epilogue writes
act(gate) * up, gate and up rounded to the output dtype first as the unfused path does.

A program owns ``BN`` output columns of ``BM`` rows and one of ``SPLIT_K`` slices of K. ``DOT``
tiles multiply with tl.dot (rows past M masked); the others multiply in registers and reduce over
K once, after the loop (small BM). With ``SPLIT_K > 1`` (a run-time count) every program stores its float32 partial
in a workspace and bumps its tile's counter; the last one sums the partials in a fixed order and
runs the epilogue (one kernel, deterministic), then zeroes the counter for the next launch.
``SWAP`` tl.dot tiles compute the transposed tile W x^T, the weight rows on the MMA's M side.
``PDL`` (programmatic dependent launch): the first weight tile is loaded before waiting for the
previous kernel, and the next kernel may launch once every program has left the K loop.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm_triton.kernels._common import (FLOAT_DTYPES, cdiv, check_tensor, gated_act, mac,
                                             pdl_launch, pdl_trigger, pdl_wait)

MAX_M = 256
NUM_LOCKS = 1 << 16
ACTS = {"silu": 0, "gelu_tanh": 1}
_locks: dict[torch.device, torch.Tensor] = {}


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, ws_ptr, lock_ptr, M, N, K, K_SPLIT,
                 SPLIT_K, stride_xm, stride_wn, stride_om, GATED: tl.constexpr, ACT: tl.constexpr,
                 HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                 SPLIT: tl.constexpr, DOT: tl.constexpr, SWAP: tl.constexpr,
                 IEEE: tl.constexpr, PDL: tl.constexpr):
    pid_n, pid_k, pid_m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    m_ok, n_ok = offs_m < M, offs_n < N
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm
    w_ptrs = w_ptr + offs_n[:, None] * stride_wn
    u_ptrs = w_ptrs + N * stride_wn
    if SWAP:  # transposed back after the K loop
        acc = tl.zeros([BN, BM], tl.float32)
    elif DOT:
        acc = tl.zeros([BM, BN], tl.float32)
    else:
        acc = tl.zeros([BM, BN, BK], tl.float32)
    acc_up = acc
    # the first weight tile does not depend on the previous kernel: load it before waiting
    k_start = pid_k * K_SPLIT
    kk = k_start + offs_k
    wk_ok = n_ok[:, None] & (kk < K)[None, :]
    w = tl.load(w_ptrs + kk[None, :], mask=wk_ok, other=0.0)
    u = w
    if GATED:
        u = tl.load(u_ptrs + kk[None, :], mask=wk_ok, other=0.0)
    pdl_wait(PDL)
    x = tl.load(x_ptrs + kk[None, :], mask=m_ok[:, None] & (kk < K)[None, :], other=0.0)
    acc, acc_up = mac(acc, acc_up, x, w, u, GATED, DOT, IEEE, SWAP)
    for k0 in range(k_start + BK, tl.minimum(k_start + K_SPLIT, K), BK):
        kk = k0 + offs_k
        k_ok = kk < K
        x = tl.load(x_ptrs + kk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptrs + kk[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
        if GATED:
            u = tl.load(u_ptrs + kk[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
        acc, acc_up = mac(acc, acc_up, x, w, u, GATED, DOT, IEEE, SWAP)
    pdl_trigger(PDL)
    if SWAP:
        acc = tl.trans(acc)
        acc_up = tl.trans(acc_up)
    elif not DOT:
        acc = tl.sum(acc, axis=2)
        acc_up = tl.sum(acc_up, axis=2)
    mn_ok = m_ok[:, None] & n_ok[None, :]
    if not SPLIT:
        _finish(acc, acc_up, bias_ptr, out_ptr, offs_m, offs_n, mn_ok, N, stride_om,
                GATED, ACT, HAS_BIAS)
    else:
        if GATED:
            width = N * 2
        else:
            width = N
        ws = ws_ptr + offs_m[:, None] * width + offs_n[None, :]
        tl.store(ws + pid_k * M * width, acc, mask=mn_ok)
        if GATED:
            tl.store(ws + pid_k * M * width + N, acc_up, mask=mn_ok)
        tl.debug_barrier()  # every thread's partial is stored before the release below
        lock = lock_ptr + pid_m * tl.num_programs(0) + pid_n
        if tl.atomic_add(lock, 1, sem="acq_rel", scope="gpu") == SPLIT_K - 1:
            acc = tl.zeros([BM, BN], tl.float32)
            acc_up = tl.zeros([BM, BN], tl.float32)
            for s in range(SPLIT_K):
                acc += tl.load(ws + s * M * width, mask=mn_ok, other=0.0, cache_modifier=".cg")
                if GATED:
                    acc_up += tl.load(ws + s * M * width + N, mask=mn_ok, other=0.0,
                                      cache_modifier=".cg")
            _finish(acc, acc_up, bias_ptr, out_ptr, offs_m, offs_n, mn_ok, N, stride_om,
                    GATED, ACT, HAS_BIAS)
            tl.atomic_xchg(lock, 0)


@triton.jit
def _finish(acc, acc_up, bias_ptr, out_ptr, offs_m, offs_n, mn_ok, N, stride_om,
            GATED: tl.constexpr, ACT: tl.constexpr, HAS_BIAS: tl.constexpr):
    n_ok = offs_n < N
    dtype = out_ptr.dtype.element_ty
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        if GATED:
            acc_up += tl.load(bias_ptr + N + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if GATED:
        gate = acc.to(dtype).to(tl.float32)
        acc = gated_act(gate, ACT) * acc_up.to(dtype).to(tl.float32)
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], acc.to(dtype), mask=mn_ok)


def _lock_buffer(device: torch.device) -> torch.Tensor:
    """Split-K tile counters, zero between launches (each kernel resets the ones it used)."""
    if device not in _locks:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("run the Triton GEMV once before CUDA-graph capture (it "
                               "allocates its split-K counters then)")
        _locks[device] = torch.zeros(NUM_LOCKS, dtype=torch.int32, device=device)
    return _locks[device]


def check_config(cfg: dict) -> None:
    bm, bn, bk = cfg["BM"], cfg["BN"], cfg["BK"]
    if not all(v > 0 and v & (v - 1) == 0 for v in (bm, bn, bk)):
        raise ValueError(f"gemv config BM/BN/BK must be powers of 2, got {cfg}")
    if cfg["DOT"] and min(bm, bn, bk) < 16:
        raise ValueError(f"gemv config with DOT needs BM, BN, BK >= 16, got {cfg}")
    if cfg.get("SWAP") and not cfg["DOT"]:
        raise ValueError(f"gemv config with SWAP needs DOT, got {cfg}")
    if cfg["SPLIT_K"] < 1:
        raise ValueError(f"gemv config SPLIT_K must be >= 1, got {cfg}")


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, cfg: dict,
         activation: str | None = None, pdl: bool = False) -> torch.Tensor:
    """``x [M, K] @ weight[N, K]^T + bias`` for M <= 256; with ``activation`` ("silu" or
    "gelu_tanh") weight is [2I, K] and the result ``act(gate) * up`` is [M, I]."""
    check_tensor("x", x, 2)
    check_tensor("weight", weight, 2, device=x.device)
    if x.dtype != weight.dtype or x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"x ({x.dtype}) and weight ({weight.dtype}) must share a float dtype")
    m, k = x.shape
    rows = weight.shape[0]
    if weight.shape[1] != k:
        raise ValueError(f"x has K={k} but weight is {tuple(weight.shape)}")
    if not 0 < m <= MAX_M:
        raise ValueError(f"gemv takes 1..{MAX_M} rows, got {m}")
    if activation is not None and (activation not in ACTS or rows % 2):
        raise ValueError(f"gated gemv needs activation in {tuple(ACTS)} and an even weight row "
                         f"count, got {activation!r} and {rows}")
    if bias is not None:
        check_tensor("bias", bias, 1, device=x.device)
        if bias.shape[0] != rows:
            raise ValueError(f"bias has {bias.shape[0]} entries for {rows} weight rows")
    check_config(cfg)
    n = rows // 2 if activation else rows
    bm, bn, split = cfg["BM"], cfg["BN"], cfg["SPLIT_K"]
    k_split = cdiv(cdiv(k, split), cfg["BK"]) * cfg["BK"]
    split = cdiv(k, k_split)
    grid = (cdiv(n, bn), split, cdiv(m, bm))
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    locks = _lock_buffer(x.device)
    if split > 1 and grid[0] * grid[2] > NUM_LOCKS:
        raise ValueError(f"gemv config {cfg} needs {grid[0] * grid[2]} tile counters "
                         f"(max {NUM_LOCKS}): use a larger BN")
    ws = torch.empty(split, m, rows, dtype=torch.float32, device=x.device) if split > 1 else out
    _gemv_kernel[grid](
        x, weight, bias if bias is not None else x, out, ws, locks, m, n, k, k_split, split,
        x.stride(0), weight.stride(0), out.stride(0), GATED=activation is not None,
        ACT=ACTS.get(activation, 0), HAS_BIAS=bias is not None, BM=bm, BN=bn, BK=cfg["BK"],
        SPLIT=split > 1, DOT=bool(cfg["DOT"]), SWAP=bool(cfg.get("SWAP")),
        IEEE=x.dtype == torch.float32, PDL=pdl,
        num_warps=cfg.get("num_warps", 4), num_stages=cfg.get("num_stages", 3),
        **pdl_launch(pdl))
    return out
