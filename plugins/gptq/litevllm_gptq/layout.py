"""The one packed-integer weight layout that every W4A16 / W8A16 source repacks into.

GPTQ, AWQ, online int8 and GGUF (Q4_0, Q8_0, Q4_K, Q6_K) are all converted at load time into
``PackedWeight``; one Triton kernel family (and this torch reference) serves them all.

For a linear layer ``y = x @ W`` with ``W`` of shape ``[K, N]`` (K inputs, N outputs):

* ``qweight`` int32 ``[K // p, N]`` with ``p = 32 // bits`` (bits 4 or 8): the unsigned code
  ``q[k, n]`` lives in ``qweight[k // p, n]`` at bits ``(k % p) * bits`` upwards
  (GPTQ's own order along K);
* ``scales`` ``[K // G, N]`` and ``bias`` ``[K // G, N]`` (or None), float, G the group size
  (``G = K`` for per-channel);
* ``w[k, n] = q[k, n] * scales[k // G, n] + bias[k // G, n]``; with ``bias`` None the code is
  symmetric around ``2**(bits - 1)``: ``w = (q - 2**(bits - 1)) * scales``;
* ``perm`` int64 ``[K]`` or None: when set the layer computes ``x[:, perm] @ W`` (GPTQ
  ``desc_act``: rows are sorted by group at load so groups stay contiguous).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PackedWeight:
    qweight: torch.Tensor
    scales: torch.Tensor
    bias: torch.Tensor | None
    bits: int
    group_size: int
    perm: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(K, N)``."""
        return self.qweight.shape[0] * (32 // self.bits), self.qweight.shape[1]


def unpack_rows(qweight: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 ``[K // p, N]`` -> int32 codes ``[K, N]`` (sequential order along K)."""
    p = 32 // bits
    shifts = torch.arange(0, 32, bits, device=qweight.device, dtype=torch.int32)
    codes = (qweight.unsqueeze(1) >> shifts.view(1, p, 1)) & ((1 << bits) - 1)
    return codes.reshape(-1, qweight.shape[1])


def pack_rows(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """int codes ``[K, N]`` in ``[0, 2**bits)`` -> int32 ``[K // p, N]`` (inverse of unpack_rows)."""
    p = 32 // bits
    k, n = codes.shape
    if k % p:
        raise ValueError(f"K={k} is not a multiple of {p} (the codes per int32 at {bits} bits)")
    c = codes.to(torch.int64).reshape(k // p, p, n)
    shifts = torch.arange(0, 32, bits, device=codes.device, dtype=torch.int64).view(1, p, 1)
    packed = (c << shifts).sum(dim=1)
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def dequantize(w: PackedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The reference: ``W`` as ``[K, N]`` in ``dtype``, rows in the layout's (permuted) order."""
    q = unpack_rows(w.qweight, w.bits).float()
    scales = w.scales.float().repeat_interleave(w.group_size, dim=0)
    if w.bias is None:
        out = (q - 2 ** (w.bits - 1)) * scales
    else:
        out = q * scales + w.bias.float().repeat_interleave(w.group_size, dim=0)
    return out.to(dtype)


def matmul_ref(x: torch.Tensor, w: PackedWeight) -> torch.Tensor:
    """``x @ W`` through the dequantized weight (the CPU path and the kernels' oracle)."""
    if w.perm is not None:
        x = x[..., w.perm]
    return x @ dequantize(w, x.dtype)
