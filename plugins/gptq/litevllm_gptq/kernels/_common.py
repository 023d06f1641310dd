"""Input checks and tile arithmetic shared by the packed-weight kernel wrappers."""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_inputs(x: torch.Tensor, w) -> None:
    """``x [M, K]`` against a ``PackedWeight``; one-line errors naming the cause."""
    if x.dim() != 2 or x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"x must be a 2-D float16/bfloat16/float32 tensor, got "
                         f"{x.dtype} {tuple(x.shape)}")
    if x.stride(-1) != 1:
        raise ValueError(f"x must be contiguous in its last dim, got strides {x.stride()}")
    k, n = w.shape
    if x.shape[1] != k:
        raise ValueError(f"x has {x.shape[1]} features, the packed weight expects {k}")
    if w.bits not in (4, 8) or w.qweight.dtype != torch.int32 or not w.qweight.is_contiguous():
        raise ValueError(f"packed weight must be contiguous int32 with bits 4 or 8, got "
                         f"{w.qweight.dtype} bits={w.bits}")
    for name, t, rows in (("scales", w.scales, k // w.group_size), ("bias", w.bias, k // w.group_size)):
        if t is not None and (tuple(t.shape) != (rows, n) or not t.is_contiguous()):
            raise ValueError(f"packed {name} must be contiguous [{rows}, {n}], got "
                             f"{tuple(t.shape)}")
    for name, t in (("qweight", w.qweight), ("scales", w.scales), ("bias", w.bias),
                    ("perm", w.perm)):
        if t is not None and t.device != x.device:
            raise ValueError(f"packed {name} is on {t.device}, x on {x.device}")


def pow2_tile(rows: int, most: int) -> int:
    """The largest power of 2 <= ``most`` dividing ``rows`` (tiles never run past K)."""
    tile = most
    while rows % tile:
        tile //= 2
    return tile


def rows_per_group_tile(group_rows: int, tile_rows: int) -> int:
    """Packed rows of one group inside a tile: a power of 2 dividing both (tiles never straddle
    a group boundary mid-row-block)."""
    return math.gcd(group_rows, tile_rows)


@triton.jit
def unpack_exact(packed, shift, BITS: tl.constexpr):
    """Codes ``(packed >> shift) & mask`` as exact float32 values (no int-to-float convert:
    the code goes into the mantissa of 2**23 and 2**23 is subtracted)."""
    mask: tl.constexpr = (1 << BITS) - 1
    bits = ((packed >> shift) & mask) | 0x4B000000
    return bits.to(tl.float32, bitcast=True) - 8388608.0
