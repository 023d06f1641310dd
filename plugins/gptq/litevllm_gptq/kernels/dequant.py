"""Dequantize a ``PackedWeight`` to a dense ``[K, N]`` matrix (for dequant + cuBLAS at large M)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm_gptq.kernels._common import pow2_tile, unpack_exact


@triton.jit
def _dequant_kernel(qw_ptr, s_ptr, zb_ptr, out_ptr, N, GROUP_ROWS, BITS: tl.constexpr,
                    HAS_ZB: tl.constexpr, BKP: tl.constexpr, BN: tl.constexpr):
    P: tl.constexpr = 32 // BITS
    MID: tl.constexpr = 1 << (BITS - 1)
    row0 = tl.program_id(0) * BKP
    offs_n = tl.program_id(1) * BN + tl.arange(0, BN)
    n_mask = offs_n < N
    r = tl.arange(0, BKP)
    packed = tl.load(qw_ptr + (row0 + r)[:, None] * N + offs_n[None, :], mask=n_mask[None, :],
                     other=0)
    q = unpack_exact(packed[:, None, :], (tl.arange(0, P) * BITS)[None, :, None], BITS)
    g = row0 // GROUP_ROWS
    s = tl.load(s_ptr + g * N + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, None, :]
    if HAS_ZB:
        b = tl.load(zb_ptr + g * N + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, None, :]
        w = q * s + b
    else:
        w = (q - MID) * s
    k = (row0 + r)[:, None, None] * P + tl.arange(0, P)[None, :, None]
    tl.store(out_ptr + k * N + offs_n[None, None, :], w.to(out_ptr.dtype.element_ty),
             mask=n_mask[None, None, :])


def dequantize(w, dtype: torch.dtype) -> torch.Tensor:
    """``W [K, N]`` in ``dtype``, rows in the layout's (permuted) order."""
    k, n = w.shape
    p = 32 // w.bits
    bkp = pow2_tile(w.group_size // p, 16)
    out = torch.empty(k, n, device=w.qweight.device, dtype=dtype)
    bn = 128
    _dequant_kernel[(k // p // bkp, triton.cdiv(n, bn))](
        w.qweight, w.scales, w.bias if w.bias is not None else w.scales, out, n,
        w.group_size // p, BITS=w.bits, HAS_ZB=w.bias is not None, BKP=bkp, BN=bn)
    return out
