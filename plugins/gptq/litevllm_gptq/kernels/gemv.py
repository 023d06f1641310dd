"""W4A16 / W8A16 GEMV for a few rows (decode at batch 1): CUDA-core FMAs over a ``PackedWeight``,
split along K when N alone does not fill the GPU. A config with ``KERNEL: "wide"`` runs
``gemv_wide`` (barrier-free K loop) instead.

Each program owns ``BN`` output columns of one row and a slice of K; a tile is
``[NG groups, RG packed rows, BN]`` int32. Codes are turned into floats without an int-to-float
convert: ``f = 1 + q / 2**BITS`` is built directly in the mantissa, so ``w = q * s + b =
f * (2**BITS * s) + (b - 2**BITS * s)``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm_gptq.kernels._common import check_inputs, pow2_tile, rows_per_group_tile
from litevllm_gptq.kernels.reduce import splitk_reduce
from litevllm_gptq.kernels.tuning import lookup


@triton.jit
def _gemv_kernel(x_ptr, qw_ptr, s_ptr, zb_ptr, perm_ptr, bias_ptr, out_ptr, eid_ptr,
                 N, K, ROWS_PER_SPLIT, GROUP_ROWS, stride_xm, stride_om, stride_os,
                 stride_qe, stride_se,
                 BITS: tl.constexpr, HAS_ZB: tl.constexpr, HAS_PERM: tl.constexpr,
                 HAS_BIAS: tl.constexpr, NG: tl.constexpr, RG: tl.constexpr, BN: tl.constexpr,
                 PER_ELEMENT: tl.constexpr, HAS_EXPERT: tl.constexpr):
    P: tl.constexpr = 32 // BITS
    MID: tl.constexpr = 1 << (BITS - 1)
    TOP: tl.constexpr = (1 << BITS) - 1
    SCALE: tl.constexpr = 1 << BITS
    pid_n, pid_k, m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_n = pid_n * BN + tl.arange(0, BN)
    n_mask = offs_n < N
    g = tl.arange(0, NG)
    r = tl.arange(0, RG)
    tile_rows = g[:, None] * RG + r[None, :]  # [NG, RG]
    x_row = x_ptr + m * stride_xm
    if HAS_EXPERT:  # row m multiplies its own expert's weight (MoE decode)
        e = tl.load(eid_ptr + m).to(tl.int64)
        qw_ptr += e * stride_qe
        s_ptr += e * stride_se
        zb_ptr += e * stride_se
    row_start = pid_k * ROWS_PER_SPLIT
    if PER_ELEMENT:
        acc3 = tl.zeros([NG, RG, BN], tl.float32)
    else:
        acc2 = tl.zeros([NG, BN], tl.float32)
    for row0 in range(row_start, row_start + ROWS_PER_SPLIT, NG * RG):
        rows = row0 + tile_rows
        packed = tl.load(qw_ptr + rows[:, :, None] * N + offs_n[None, None, :],
                         mask=n_mask[None, None, :], other=0)
        grp = (row0 + g * RG) // GROUP_ROWS  # [NG]
        sg = tl.load(s_ptr + grp[:, None] * N + offs_n[None, :], mask=n_mask[None, :],
                     other=0.0).to(tl.float32)
        if HAS_ZB:
            bg = tl.load(zb_ptr + grp[:, None] * N + offs_n[None, :], mask=n_mask[None, :],
                         other=0.0).to(tl.float32)
        else:
            bg = -MID * sg
        s2 = sg * SCALE          # w = f * s2 + b2 with f = 1 + q / 2**BITS
        b2 = bg - s2
        part = tl.zeros([NG, RG, BN], tl.float32)
        sumx = tl.zeros([NG, RG], tl.float32)
        for j in tl.static_range(P):
            k = rows * P + j
            if HAS_PERM:
                k = tl.load(perm_ptr + k)
            xj = tl.load(x_row + k).to(tl.float32)  # [NG, RG]
            shift = 23 - BITS - BITS * j  # compile-time (j is a static_range index)
            if shift >= 0:
                t = packed << shift
            else:
                t = packed >> (-shift)
            f = ((t & (TOP << (23 - BITS))) | 0x3F800000).to(tl.float32, bitcast=True)
            if PER_ELEMENT:
                acc3 += xj[:, :, None] * (f * s2[:, None, :] + b2[:, None, :])
            else:
                part += xj[:, :, None] * f
                sumx += xj
        if not PER_ELEMENT:
            acc2 += tl.sum(part, axis=1) * s2 + tl.sum(sumx, axis=1)[:, None] * b2
    if PER_ELEMENT:
        acc = tl.sum(tl.sum(acc3, axis=1), axis=0)
    else:
        acc = tl.sum(acc2, axis=0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + pid_k * stride_os + m * stride_om + offs_n,
             acc.to(out_ptr.dtype.element_ty), mask=n_mask)


def default_config(m: int, k: int, n: int, bits: int) -> dict:
    """Tile and split for a shape: enough programs to fill ~132 SMs several times over."""
    bn = 128 if n >= 4096 else 64
    rows = k * bits // 32
    split = 1
    while (n // bn) * split < 512 and rows // (split * 2) >= 64 and split < 16:
        split *= 2
    return dict(KERNEL="split", BN=bn, TILE_ROWS=16 if bits == 4 else 32, SPLIT=split,
                PER_ELEMENT=False, num_warps=4)


def gemv(x: torch.Tensor, w, bias: torch.Tensor | None = None, config: dict | None = None):
    """``x [M, K] @ W [K, N] (+ bias)`` -> ``[M, N]`` in ``x.dtype`` (meant for M <= 4)."""
    check_inputs(x, w)
    return _launch(x, w, bias, config, None)


def gemv_experts(x: torch.Tensor, w, expert_ids: torch.Tensor, bias=None, config=None):
    """Row ``m`` of ``x [M, K]`` times expert ``expert_ids[m]`` of a stacked ``PackedWeight``
    (``qweight [E, K / p, N]``, ``scales``/``bias [E, K / G, N]``, no perm) -> ``[M, N]``."""
    if w.qweight.dim() != 3 or w.perm is not None:
        raise ValueError("gemv_experts needs stacked [E, K/p, N] expert weights without perm")
    if expert_ids.shape != (x.shape[0],) or expert_ids.device != x.device:
        raise ValueError(f"expert_ids must be [{x.shape[0]}] on {x.device}, got "
                         f"{tuple(expert_ids.shape)} on {expert_ids.device}")
    check_inputs(x, _expert0(w))
    return _launch(x, w, bias, config, expert_ids)


def _expert0(w):
    return type(w)(w.qweight[0], w.scales[0], None if w.bias is None else w.bias[0], w.bits,
                   w.group_size)


def config_for(m: int, k: int, n: int, bits: int, device, config: dict | None = None) -> dict:
    """Tuned entry (or ``config``) over its kernel's defaults; ``KERNEL: "wide"`` picks
    gemv_wide, anything else this module's kernel. ``device`` None: no table."""
    from litevllm_gptq.kernels import gemv_wide
    cfg = (lookup("gemv", m, bits, k, n, device) if device is not None else None) or {}
    if config and config.get("KERNEL", "split") != cfg.get("KERNEL", "split"):
        cfg = {}  # the tuned entry is for the other kernel
    cfg = {**cfg, **(config or {})}
    base = gemv_wide.default_config if cfg.get("KERNEL") == "wide" else default_config
    return {**base(m, k, n, bits), **cfg}


def _launch(x, w, bias, config, expert_ids):
    m, k = x.shape
    n = w.qweight.shape[-1]
    p = 32 // w.bits
    rows = k // p
    cfg = config_for(m, k, n, w.bits, x.device, config)
    if cfg.get("KERNEL") == "wide":
        from litevllm_gptq.kernels import gemv_wide
        return gemv_wide.launch(x, w, bias, cfg, expert_ids)
    tile = pow2_tile(rows, cfg["TILE_ROWS"])
    rg = rows_per_group_tile(w.group_size // p, tile)
    split = cfg["SPLIT"]
    while split > 1 and rows % (split * tile):
        split //= 2
    out = torch.empty(m, n, device=x.device, dtype=x.dtype)
    target = out if split == 1 else torch.empty(split, m, n, device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(n, cfg["BN"]), split, m)
    experts = expert_ids is not None
    _gemv_kernel[grid](
        x, w.qweight, w.scales, w.bias if w.bias is not None else w.scales,
        w.perm if w.perm is not None else w.qweight, bias if bias is not None else w.scales,
        target, expert_ids if experts else w.qweight, n, k, rows // split, w.group_size // p,
        x.stride(0), n, m * n, w.qweight.stride(0) if experts else 0,
        w.scales.stride(0) if experts else 0,
        BITS=w.bits, HAS_ZB=w.bias is not None, HAS_PERM=w.perm is not None,
        HAS_BIAS=bias is not None and split == 1, NG=tile // rg, RG=rg, BN=cfg["BN"],
        PER_ELEMENT=cfg["PER_ELEMENT"], HAS_EXPERT=experts, num_warps=cfg["num_warps"])
    return out if split == 1 else splitk_reduce(target, bias, out)
