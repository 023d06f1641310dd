"""Fused MoE: softmax top-k routing and the (token, slot) rows grouped by expert into
BLOCK_M-aligned blocks (one Triton program up to 2,048 rows, torch ops beyond), then two
grouped GEMMs: gate_up with the gated activation fused, and down with the routing weights
applied; the top-k partial outputs are summed by one more kernel, which can add a
(gated) shared expert's output. BLOCK_M >= 16 multiplies with tl.dot,
smaller blocks (decode, few rows per expert) with the skinny GEMM's register products.

No host synchronisation (no .item() / .tolist(), no data-dependent shapes): the block list is
padded to a static worst case and padding blocks exit at once, so the op can be captured in a
CUDA graph. Block sizes come from JSON files per (E, N=intermediate, K=hidden, device) in
``litevllm_triton/fused_moe_configs`` (written by ``benchmarks/tune_fused_moe.py``), keyed by the
token count; untuned shapes get a default.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
import triton
import triton.language as tl

from litevllm.plugin_api import canonical_activation, torch_ops
from litevllm_triton.kernels import act_and_mul
from litevllm_triton.kernels._common import (cdiv, check_tensor, device_name, gated_act, mac,
                                             next_pow2)

ACTIVATIONS = {"silu": 0, "gelu_tanh": 1}  # by canonical_activation name
# folded shared experts (shared_experts=S) run in the grouped GEMMs up to this many tokens
# (decode: H200, Qwen1.5-MoE batch 1 2.12 -> 1.99 ms, batch 16 5.96 -> 5.78); above it their
# T rows per slice made the 16-row blocks re-read the slices (128-token prefill 2.8 -> 4.6 ms
# of GEMM time), so dense GEMMs run them
GROUPED_SHARED_MAX_TOKENS = 16
CONFIG_DIR = Path(__file__).resolve().parent.parent / "fused_moe_configs"


@triton.jit(do_not_specialize=["num_rows", "num_blocks"])  # per-step counts
def _moe_gemm_kernel(a_ptr, b_ptr, c_ptr, rows_ptr, block_expert_ptr, weights_ptr,
                     num_rows, num_blocks, num_experts, N, K, a_div,
                     stride_am, stride_be, stride_bn, stride_cm,
                     GATED: tl.constexpr, ACT: tl.constexpr, WEIGHTED: tl.constexpr,
                     IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """For each block of BLOCK_M sorted rows (all of one expert e) and each BLOCK_N columns:
    ``C[row] = A[row // a_div] @ B[e]^T``. GATED: B[e] is gate rows [0, N) then up rows [N, 2N)
    and ``C = act(gate) * up``. WEIGHTED: C is scaled by ``weights[row]``. BLOCK_M >= 16
    multiplies with tl.dot; smaller blocks (1-8 rows, decode) in registers as the skinny GEMM
    does, with long BLOCK_K tiles."""
    # grouped launch order: GROUP_M row blocks share each weight tile while it is in L2
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
    valid = rows < num_rows  # padding rows hold num_rows
    rows = rows.to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + (rows // a_div)[:, None] * stride_am + offs_k[None, :]
    b_base = b_ptr + expert.to(tl.int64) * stride_be + offs_n.to(tl.int64) * stride_bn
    if BLOCK_M >= 16:  # tl.dot tiles
        b_ptrs = b_base[None, :] + offs_k[:, None]  # [BLOCK_K, BLOCK_N] tile of B^T
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k_ok = offs_k < K - k0
            a = tl.load(a_ptrs, mask=valid[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            if IEEE:  # float32 inputs: exact products, not TF32
                acc = tl.dot(a, b, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, b, acc)
            if GATED:
                u = tl.load(b_ptrs + N * stride_bn, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
                if IEEE:
                    acc_up = tl.dot(a, u, acc_up, input_precision="ieee")
                else:
                    acc_up = tl.dot(a, u, acc_up)
            a_ptrs += BLOCK_K
            b_ptrs += BLOCK_K
    else:  # a few rows per expert (decode): the skinny GEMM's register products
        w_ptrs = b_base[:, None] + offs_k[None, :]  # [BLOCK_N, BLOCK_K], K contiguous
        acc3 = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_K), dtype=tl.float32)
        up3 = acc3
        for k0 in range(0, K, BLOCK_K):
            k_ok = offs_k < K - k0
            a = tl.load(a_ptrs, mask=valid[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=n_ok[:, None] & k_ok[None, :], other=0.0)
            u = w
            if GATED:
                u = tl.load(w_ptrs + N * stride_bn, mask=n_ok[:, None] & k_ok[None, :], other=0.0)
            acc3, up3 = mac(acc3, up3, a, w, u, GATED, False, IEEE)
            a_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        acc = tl.sum(acc3, axis=2)
        acc_up = tl.sum(up3, axis=2)
    if GATED:
        acc = gated_act(acc, ACT) * acc_up
    if WEIGHTED:
        acc = acc * tl.load(weights_ptr + rows, mask=valid, other=0.0)[:, None]
    c_ptrs = c_ptr + rows[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=valid[:, None] & n_ok[None, :])


@triton.jit
def _moe_sum_kernel(y_ptr, shared_ptr, gate_ptr, out_ptr, H, stride_yt, stride_st, stride_gt,
                    stride_ot, TOP_K: tl.constexpr, SHARED: tl.constexpr, GATE: tl.constexpr,
                    BLOCK_H: tl.constexpr):
    """``out[t] = sum_k y[t, k] (+ sigmoid(gate[t]) * shared[t])`` in float32, rounded once."""
    t = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ok = offs < H
    acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for k in tl.static_range(TOP_K):
        acc += tl.load(y_ptr + t * stride_yt + k * H + offs, mask=ok, other=0.0).to(tl.float32)
    if SHARED:
        sh = tl.load(shared_ptr + t * stride_st + offs, mask=ok, other=0.0).to(tl.float32)
        if GATE:
            sh = sh * tl.sigmoid(tl.load(gate_ptr + t * stride_gt).to(tl.float32))
        acc += sh
    tl.store(out_ptr + t * stride_ot + offs, acc.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit(do_not_specialize=["T", "num_blocks"])  # per-step counts
def _route_align_kernel(logits_ptr, weights_ptr, scratch_ptr, rows_ptr, block_expert_ptr,
                        T, E, stride_lt, stride_le, num_blocks, TOP_K: tl.constexpr,
                        RENORM: tl.constexpr, BLOCK_M: tl.constexpr, E_P: tl.constexpr,
                        K_P: tl.constexpr, CHUNK: tl.constexpr, TILE: tl.constexpr,
                        SHARED: tl.constexpr, GATE: tl.constexpr):
    """Softmax top-k routing over E experts, then ``moe_align``'s layout, in one program. Loops
    over CHUNK tokens (or blocks) at a time against all E_P experts (CHUNK * E_P <= TILE), or
    TILE rows. SHARED experts E .. E + SHARED - 1 follow each token's top-k slots, weighted by
    sigmoid(logit column E) with GATE, else 1 (``torch_ops.add_shared_slots``). ``scratch``:
    expert id [0, n) and rank within the expert [n, 2n) of each flat row, then each expert's
    padded start [2n, 2n + E_P)."""
    SLOTS: tl.constexpr = TOP_K + SHARED
    n = T * SLOTS
    num_slots = num_blocks * BLOCK_M
    f = tl.arange(0, TILE)
    for r0 in range(0, num_slots, TILE):  # every row slot is padding until placed below
        tl.store(rows_ptr + r0 + f, n, mask=r0 + f < num_slots)

    ex = tl.arange(0, E_P)
    e_ok = ex < E
    kk = tl.arange(0, K_P)
    c = tl.arange(0, CHUNK)
    counts = tl.zeros((E_P,), dtype=tl.int32)  # rows per expert so far
    for t0 in range(0, T, CHUNK):  # routing, CHUNK tokens at a time
        t = t0 + c
        t_ok = t < T
        x = tl.load(logits_ptr + t[:, None] * stride_lt + ex[None, :] * stride_le,
                    mask=t_ok[:, None] & e_ok[None, :], other=0.0).to(tl.float32)
        x = tl.where(e_ok[None, :], x, float("-inf"))
        p = tl.exp(x - tl.max(x, axis=1)[:, None])
        p = p / tl.sum(p, axis=1)[:, None]
        w = tl.zeros((CHUNK, K_P), dtype=tl.float32)
        ids = tl.zeros((CHUNK, K_P), dtype=tl.int32)
        for s in tl.static_range(TOP_K):  # k rounds of argmax (lowest index on ties)
            m = tl.max(p, axis=1)
            idx = tl.min(tl.where(p == m[:, None], ex[None, :], E_P), axis=1)
            w = tl.where(kk[None, :] == s, m[:, None], w)
            ids = tl.where(kk[None, :] == s, idx[:, None], ids)
            p = tl.where(ex[None, :] == idx[:, None], -1.0, p)  # picked: marked -1
        if RENORM:
            w = w / tl.sum(w, axis=1)[:, None]
        if SHARED > 0:  # every token takes the shared experts
            g = tl.full((CHUNK,), 1.0, tl.float32)
            if GATE:
                g = tl.sigmoid(tl.load(logits_ptr + t * stride_lt + E * stride_le, mask=t_ok,
                                       other=0.0).to(tl.float32))
            sh = (kk >= TOP_K) & (kk < SLOTS)
            w = tl.where(sh[None, :], g[:, None], w)
            ids = tl.where(sh[None, :], E - TOP_K + kk[None, :], ids)
            p = tl.where((ex >= E) & (ex < E + SHARED), -1.0, p)
        # a token takes an expert at most once, so the rank of row (t, s) within its expert
        # (stable order) is the count of earlier tokens that picked the same expert
        picked = ((p < 0) & t_ok[:, None]).to(tl.int32)  # [CHUNK, E_P]
        earlier = tl.cumsum(picked, axis=0) - picked + counts[None, :]
        rank = tl.zeros((CHUNK, K_P), dtype=tl.int32)
        for s in tl.static_range(SLOTS):
            idx = tl.sum(tl.where(kk[None, :] == s, ids, 0), axis=1)
            r = tl.sum(tl.where(ex[None, :] == idx[:, None], earlier, 0), axis=1)
            rank = tl.where(kk[None, :] == s, r[:, None], rank)
        counts += tl.sum(picked, axis=0)
        flat = t[:, None] * SLOTS + kk[None, :]
        ok = t_ok[:, None] & (kk < SLOTS)[None, :]
        tl.store(weights_ptr + flat, w, mask=ok)
        tl.store(scratch_ptr + flat, ids, mask=ok)
        tl.store(scratch_ptr + n + flat, rank, mask=ok)

    blocks = (counts + BLOCK_M - 1) // BLOCK_M
    block_end = tl.cumsum(blocks, axis=0)
    tl.store(scratch_ptr + 2 * n + ex, (block_end - blocks) * BLOCK_M)
    for b0 in range(0, num_blocks, CHUNK):  # block b belongs to the first expert ending past b
        b = b0 + c
        expert_of = tl.sum((block_end[None, :] <= b[:, None]).to(tl.int32), axis=1)
        tl.store(block_expert_ptr + b, expert_of, mask=b < num_blocks)
    tl.debug_barrier()  # the scratch and padding rows, stored by other threads, are used below
    for i0 in range(0, n, TILE):  # each row to its expert's start + its rank
        i = i0 + f
        i_ok = i < n
        e = tl.load(scratch_ptr + i, mask=i_ok, other=0)
        rank = tl.load(scratch_ptr + n + i, mask=i_ok)
        dest = tl.load(scratch_ptr + 2 * n + e, mask=i_ok) + rank
        tl.store(rows_ptr + dest, i, mask=i_ok)


SMALL_ROWS, SMALL_EXPERTS = 2048, 256  # limits of the one-program route + align (T*k, E)
# elements of one tile there and its warps, by padded expert count (the first bound >= E_P).
# sm_90 PTX: 2048 on 8 warps has no spills up to E=256, top-k 8; 4096 on 16 none at E_P 64.
# H200, E=60 top-4, graphed us (torch ops / 2048:8 / 4096:16): T=64 88.8/19.9/16.9,
# T=256 97.4/60.5/46.8, T=512 99.5/114.1/86.7
ROUTE_TILES = {64: (4096, 16), SMALL_EXPERTS: (2048, 8)}


def route_tile(e_p: int) -> tuple[int, int]:
    """(tile elements, warps) of the one-program route + align for E_P padded experts."""
    return ROUTE_TILES[min(b for b in ROUTE_TILES if b >= e_p)]


def max_blocks(num_rows: int, num_experts: int, block_m: int) -> int:
    """Static worst-case count of ``block_m``-row blocks when ``num_rows`` rows are grouped by
    expert and each expert's group is padded to whole blocks (a shape-only bound)."""
    return min(num_rows, cdiv(num_rows, block_m) + num_experts)


def route_and_align(router_logits: torch.Tensor, top_k: int, renormalize: bool, block_m: int,
                    num_experts: int | None = None, shared_experts: int = 0):
    """(weights [T, k + S] float32, rows, block_expert): ``moe_route`` over the first
    ``num_experts - shared_experts`` logit columns (default: all), the S shared experts
    appended (``torch_ops.add_shared_slots``), then ``moe_align``; one Triton program up to
    SMALL_ROWS (token, slot) rows, torch ops beyond."""
    t = router_logits.shape[0]
    if shared_experts and num_experts is None:
        raise ValueError("route_and_align with shared_experts needs num_experts (routed + S)")
    e = router_logits.shape[1] if num_experts is None else num_experts
    routed, slots = e - shared_experts, top_k + shared_experts
    n = t * slots
    if n > SMALL_ROWS or e > SMALL_EXPERTS:
        weights, ids = torch_ops.moe_route(router_logits[:, :routed], top_k, renormalize)
        if shared_experts:
            weights, ids = torch_ops.add_shared_slots(weights, ids, router_logits, routed,
                                                      shared_experts)
        return (weights, *moe_align(ids, e, block_m))
    dev = router_logits.device
    num_blocks = max_blocks(n, e, block_m)
    weights = torch.empty(t, slots, dtype=torch.float32, device=dev)
    e_p = next_pow2(e)
    scratch = torch.empty(2 * n + e_p, dtype=torch.int32, device=dev)
    rows = torch.empty(num_blocks * block_m, dtype=torch.int32, device=dev)
    block_expert = torch.empty(num_blocks, dtype=torch.int32, device=dev)
    chunk, tile, warps = route_launch(t, n, e_p, num_blocks * block_m)
    _route_align_kernel[(1,)](
        router_logits, weights, scratch, rows, block_expert, t, routed, *router_logits.stride(),
        num_blocks, TOP_K=top_k, RENORM=bool(renormalize), BLOCK_M=block_m, E_P=e_p,
        K_P=next_pow2(slots), CHUNK=chunk, TILE=tile, SHARED=shared_experts,
        GATE=torch_ops.shared_gate_column(router_logits, routed) is not None, num_warps=warps)
    return weights, rows, block_expert


def route_launch(t: int, n: int, e_p: int, slots: int) -> tuple[int, int, int]:
    """(CHUNK tokens, TILE, warps) of the one-program route + align for ``t`` tokens of ``n``
    rows, ``e_p`` padded experts and ``slots`` row slots. Few tokens (decode) shrink the tile to
    what they fill, and the warps with it (a warp per 256 elements): reductions then stay
    within fewer warps."""
    tile, warps = route_tile(e_p)
    chunk = min(max(1, tile // e_p), next_pow2(t))
    small = max(chunk * e_p, next_pow2(n), next_pow2(slots))
    if small < tile:
        tile, warps = small, max(1, min(warps, small // 256))
    return chunk, tile, warps


def moe_align(ids: torch.Tensor, num_experts: int, block_m: int):
    """Group the T*k (token, slot) rows of ``ids [T, k]`` by expert, each expert's rows padded to
    a multiple of ``block_m``; torch ops only, no host sync.

    Returns ``rows [B*block_m]`` int32 (flat row ``t*k + slot``; ``T*k`` marks padding) and
    ``block_expert [B]`` int32 (``>= num_experts`` for blocks past the end), where B is
    ``max_blocks(T*k, num_experts, block_m)``.
    """
    dev, n = ids.device, ids.numel()
    flat = ids.flatten()
    sorted_e, order = torch.sort(flat, stable=True)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=dev).scatter_add_(
        0, flat, torch.ones_like(flat))
    blocks = (counts + block_m - 1) // block_m
    block_end = torch.cumsum(blocks, 0)
    # padded start - packed start of each expert's rows
    shift = (block_end - blocks) * block_m - (torch.cumsum(counts, 0) - counts)
    dest = shift[sorted_e] + torch.arange(n, device=dev)
    num_blocks = max_blocks(n, num_experts, block_m)
    rows = torch.full((num_blocks * block_m,), n, dtype=torch.int32, device=dev)
    rows.scatter_(0, dest, order.to(torch.int32))
    block_expert = torch.searchsorted(block_end, torch.arange(num_blocks, device=dev), right=True)
    return rows, block_expert.to(torch.int32)


# configs --------------------------------------------------------------------------------------
def config_file(num_experts: int, inter: int, hidden: int, device: str) -> Path:
    return CONFIG_DIR / f"E={num_experts},N={inter},K={hidden},device_name={device}.json"


@functools.lru_cache(maxsize=None)
def _load_configs(path: Path) -> dict[int, dict] | None:
    if not path.is_file():
        return None
    return {int(m): cfg for m, cfg in json.loads(path.read_text()).items()}


def default_config(m: int, dtype: torch.dtype) -> dict:
    """``BLOCK_M`` (shared: it sets the row layout) and a tile config per GEMM; near the tuned
    H100 choices for Qwen1.5-MoE."""
    if dtype == torch.float32:
        return dict(BLOCK_M=16 if m <= 32 else 64, up=_tile(32, 32, 1, 3), down=_tile(32, 32, 1, 3))
    if m <= 128:  # decode: many small tiles, deep pipelines (weight bandwidth bound)
        return dict(BLOCK_M=16, up=_tile(32, 128, 1, 4), down=_tile(64, 128, 1, 4))
    return dict(BLOCK_M=64, up=_tile(64, 64, 8, 3), down=_tile(128, 64, 8, 3))


def _tile(n, k, group_m, stages, warps=4) -> dict:
    return dict(BLOCK_N=n, BLOCK_K=k, GROUP_M=group_m, num_warps=warps, num_stages=stages)


@functools.lru_cache(maxsize=None)
def get_config(m: int, num_experts: int, inter: int, hidden: int, dtype: torch.dtype,
               device: torch.device) -> dict:
    """The tuned config for the token count nearest ``m``, else the default."""
    configs = _load_configs(config_file(num_experts, inter, hidden, device_name(device)))
    if not configs:
        return default_config(m, dtype)
    cfg = configs[min(configs, key=lambda k: abs(k - m))]
    check_config(cfg)  # a bad table entry named once here (this lookup is cached)
    return cfg


# the op ---------------------------------------------------------------------------------------
def _check(hidden, w13, w2, router_logits, top_k, activation, shared_experts):
    check_tensor("hidden", hidden, 2)
    check_tensor("w13", w13, 3, dtypes=(hidden.dtype,), device=hidden.device)
    check_tensor("w2", w2, 3, dtypes=(hidden.dtype,), device=hidden.device)
    check_tensor("router_logits", router_logits, 2, device=hidden.device, contiguous_last=False)
    t, h = hidden.shape
    e, two_i, _ = w13.shape
    if not (two_i % 2 == 0 and tuple(w13.shape) == (e, two_i, h)):
        raise ValueError(f"w13 must be [E, 2I, H={h}], got {tuple(w13.shape)}")
    if not (tuple(w2.shape) == (e, h, two_i // 2)):
        raise ValueError(f"w2 must be [E={e}, H={h}, I={two_i // 2}], got {tuple(w2.shape)}")
    torch_ops.check_moe_logits(router_logits, t, e, shared_experts, top_k)
    canonical_activation(activation)  # ValueError naming an unsupported activation


def check_config(cfg: dict) -> None:
    """A clear error for a config the kernel cannot take: block sizes are powers of 2, and the
    tl.dot tiles (BLOCK_M >= 16) need BLOCK_N and BLOCK_K >= 16 too."""
    bm = cfg.get("BLOCK_M")
    sizes = [bm] + [cfg.get(g, {}).get(k) for g in ("up", "down") for k in ("BLOCK_N", "BLOCK_K")]
    if not all(isinstance(v, int) and v > 0 and v & (v - 1) == 0 for v in sizes):
        raise ValueError(f"fused MoE config needs power-of-2 BLOCK_M and up/down BLOCK_N, "
                         f"BLOCK_K, got {cfg}")
    if bm >= 16 and min(sizes) < 16:
        raise ValueError(f"fused MoE config with BLOCK_M >= 16 (tl.dot) needs BLOCK_N and "
                         f"BLOCK_K >= 16, got {cfg}")


def moe_gemm(a, w, c, rows, block_expert, weights, block_m: int, tile: dict, gated: bool,
             act: int = 0, a_div: int = 1) -> None:
    """One grouped GEMM: gate_up (``gated``: act(gate) * up) or down (scaled by ``weights``)."""
    num_blocks, n_out = block_expert.shape[0], c.shape[1]
    _moe_gemm_kernel[(num_blocks * cdiv(n_out, tile["BLOCK_N"]),)](
        a, w, c, rows, block_expert, weights, c.shape[0], num_blocks, w.shape[0], n_out,
        a.shape[1], a_div, a.stride(0), w.stride(0), w.stride(1), c.stride(0),
        GATED=gated, ACT=act, WEIGHTED=not gated, IEEE=a.dtype == torch.float32,
        BLOCK_M=block_m, **tile)


def moe_sum(y: torch.Tensor, shared: torch.Tensor | None = None,
            shared_gate: torch.Tensor | None = None) -> torch.Tensor:
    """The top-k outputs ``y [T, k, H]`` summed, plus ``sigmoid(shared_gate [T, 1]) * shared
    [T, H]`` when given (``torch_ops.add_shared_expert``), in one kernel -> [T, H]. It adds in
    float32 and rounds once (transformers rounds the gate, product and sum each to the dtype)."""
    check_tensor("y", y, 3)
    t, top_k, h = y.shape
    if y.stride(1) != h:
        raise ValueError(f"y must be contiguous over its last two dims, got strides {y.stride()}")
    for name, x, cols in (("shared", shared, h), ("shared_gate", shared_gate, 1)):
        if x is not None:
            check_tensor(name, x, 2, device=y.device, contiguous_last=False)
            if tuple(x.shape) != (t, cols):
                raise ValueError(f"{name} must be [{t}, {cols}], got {tuple(x.shape)}")
    if shared_gate is not None and shared is None:
        raise ValueError("shared_gate needs shared")
    if shared is not None and shared.stride(-1) != 1:
        raise ValueError(f"shared must be contiguous in its last dim, got {shared.stride()}")
    out = torch.empty(t, h, dtype=y.dtype, device=y.device)
    if t == 0:
        return out
    block_h = min(next_pow2(h), 1024)
    _moe_sum_kernel[(t, cdiv(h, block_h))](
        y, y if shared is None else shared, y if shared_gate is None else shared_gate, out, h,
        y.stride(0), 0 if shared is None else shared.stride(0),
        0 if shared_gate is None else shared_gate.stride(0), out.stride(0), TOP_K=top_k,
        SHARED=shared is not None, GATE=shared_gate is not None, BLOCK_H=block_h)
    return out


def fused_moe(hidden: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
              router_logits: torch.Tensor, top_k: int, renormalize: bool,
              activation: str = "silu", shared: torch.Tensor | None = None,
              shared_gate: torch.Tensor | None = None, shared_experts: int = 0,
              config: dict | None = None) -> torch.Tensor:
    """Sparse MoE: hidden [T, H], w13 [E, 2I, H] (gate then up), w2 [E, H, I],
    router_logits [T, E] -> [T, H]; softmax top-k routing as ``torch_ops.moe_route``.
    ``shared`` / ``shared_gate``: a shared expert's output added in the final sum (``moe_sum``).
    ``shared_experts`` S: the last S experts are taken by every token (``torch_ops.fused_moe``),
    in the same grouped GEMMs up to GROUPED_SHARED_MAX_TOKENS tokens, else as dense GEMMs.
    ``config`` sets the block sizes (None: tuned for this shape and device, else a default)."""
    _check(hidden, w13, w2, router_logits, top_k, activation, shared_experts)
    if shared_experts and (shared is not None or shared_gate is not None):
        raise ValueError("pass either shared_experts (folded) or shared / shared_gate")
    t = hidden.shape[0]
    if t == 0:
        return torch.empty_like(hidden)  # (shared is [0, H] too)
    if shared_experts and t > GROUPED_SHARED_MAX_TOKENS:  # dense GEMMs over the same slices
        routed = w13.shape[0] - shared_experts
        y = _routed(hidden, w13[:routed], w2[:routed], router_logits[:, :routed], top_k,
                    renormalize, activation, 0, config)
        shared = dense_shared(hidden, w13[routed:], w2[routed:], activation)
        return moe_sum(y, shared, torch_ops.shared_gate_column(router_logits, routed))
    return moe_sum(_routed(hidden, w13, w2, router_logits, top_k, renormalize, activation,
                           shared_experts, config), shared, shared_gate)


def dense_shared(hidden: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
                 activation: str) -> torch.Tensor:
    """The folded shared expert's S slices ``w13 [S, 2I, H]``, ``w2 [S, H, I]`` as dense GEMMs:
    gate_up over all slices at once (a contiguous [S*2I, H] view), the activation, one batched
    down GEMM -> float32 [T, H] (the slices' partials summed)."""
    s, two_i, h = w13.shape
    gu = hidden @ w13.reshape(s * two_i, h).t()  # [T, S*2I]: each slice's gate then up
    act_op = getattr(act_and_mul, f"{canonical_activation(activation)}_and_mul")
    act = act_op(gu.view(-1, two_i))  # [T*S, I]
    down = torch.bmm(act.view(hidden.shape[0], s, -1).transpose(0, 1), w2.transpose(1, 2))
    return down.sum(0, dtype=torch.float32)


def _routed(hidden, w13, w2, router_logits, top_k, renormalize, activation, shared_experts,
            config) -> torch.Tensor:
    """Route + align and the two grouped GEMMs -> each (token, slot)'s output [T, k + S, H]."""
    t, h = hidden.shape
    inter = w2.shape[2]
    if config is not None:
        check_config(config)
    # tuned tables are keyed by the routed experts (the shared slices add S x T rows)
    cfg = config or get_config(t, w13.shape[0] - shared_experts, inter, h, hidden.dtype,
                               hidden.device)
    bm = cfg["BLOCK_M"]
    weights, rows, block_expert = route_and_align(router_logits, top_k, renormalize, bm,
                                                  w13.shape[0], shared_experts)
    # gate_up + activation into [T*k, I], row t*k + slot; then down, scaled by routing weight
    k = top_k + shared_experts
    act = torch.empty(t * k, inter, dtype=hidden.dtype, device=hidden.device)
    moe_gemm(hidden, w13, act, rows, block_expert, weights, bm, cfg["up"], True,
             ACTIVATIONS[canonical_activation(activation)], k)
    out = torch.empty(t * k, h, dtype=hidden.dtype, device=hidden.device)
    moe_gemm(act, w2, out, rows, block_expert, weights, bm, cfg["down"], False)
    return out.view(t, k, h)

