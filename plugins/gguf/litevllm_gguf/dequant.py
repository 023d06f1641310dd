"""Vectorised torch dequantization of GGUF (ggml) tensors.

Each decoder takes the raw blocks as a ``(n_blocks, block_bytes)`` uint8 tensor and returns their
integer codes with per-group scales and biases (``Codes``); ``Codes.values`` gives the
``(n_blocks, block_size)`` float32 values. Every block of a tensor is decoded at once. The codes
also feed the packed GPU layout (``repack.py``).
Block layouts follow ggml-quants.c (``block_q4_0`` etc.).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T

from litevllm.plugin_api import CheckpointError


def _f16(blocks: torch.Tensor, at: int) -> torch.Tensor:
    """The fp16 scalar at byte ``at`` of each block, as a (n, 1) float32 column."""
    return blocks[:, at:at + 2].contiguous().view(torch.float16).float()


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """(..., k) bytes → (..., 2k): all low nibbles, then all high nibbles."""
    return torch.cat([packed & 0x0F, packed >> 4], dim=-1)


def _bits(packed: torch.Tensor, count: int) -> torch.Tensor:
    """(n, k) bytes → (n, count) of their bits, least significant first, as 0/1 uint8."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    return ((packed.unsqueeze(-1) >> shifts) & 1).reshape(len(packed), -1)[:, :count]


@dataclass
class Codes:
    """A block type decoded into integers and per-group floats, before any float arithmetic:
    ``w = (codes - offset) * scales + bias`` per group of ``group`` values (bias None: no term).
    ``codes`` (n_blocks, block_size) uint8 below ``2**bits``; scales, bias (n_blocks, block_size // group)
    float32."""
    codes: torch.Tensor
    scales: torch.Tensor
    bias: torch.Tensor | None
    bits: int
    offset: int
    group: int

    def values(self) -> torch.Tensor:
        """(n_blocks, block_size) float32."""
        n, size = self.codes.shape
        per_group = (n, size // self.group, self.group)
        values = self.codes.float()
        if self.offset:
            values.sub_(self.offset)
        values = values.view(per_group).mul_(self.scales.unsqueeze(-1))
        if self.bias is not None:
            values.add_(self.bias.unsqueeze(-1))
        return values.view(n, size)


def _q4_0(b):  # d, 16 bytes of 4-bit values, offset 8
    return Codes(_nibbles(b[:, 2:]), _f16(b, 0), None, 4, 8, 32)


def _q4_1(b):  # d, m, 16 bytes of 4-bit values
    return Codes(_nibbles(b[:, 4:]), _f16(b, 0), _f16(b, 2), 4, 0, 32)


def _q5_0(b):  # d, 32 high bits, 16 bytes of low nibbles, offset 16
    return Codes(_nibbles(b[:, 6:]) | (_bits(b[:, 2:6], 32) << 4), _f16(b, 0), None, 5, 16, 32)


def _q5_1(b):  # d, m, 32 high bits, 16 bytes of low nibbles
    return Codes(_nibbles(b[:, 8:]) | (_bits(b[:, 4:8], 32) << 4), _f16(b, 0), _f16(b, 2), 5, 0, 32)


def _q8_0(b):  # d, 32 int8 values; flipping the sign bit gives the code q + 128
    return Codes(b[:, 2:] ^ 0x80, _f16(b, 0), None, 8, 128, 32)


def _k_scales_mins(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 six-bit scales and mins of a Q4_K / Q5_K block, packed into 12 bytes."""
    low, mid, high = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = torch.cat([low & 63, (high & 0x0F) | ((low >> 6) << 4)], dim=1)
    mins = torch.cat([mid & 63, (high >> 4) | ((mid >> 6) << 4)], dim=1)
    return scales.float(), mins.float()


def _k_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """(n, 128) bytes → (n, 8, 32): each 32-byte chunk gives a low-nibble then a high-nibble sub-block."""
    return _nibbles(packed.reshape(-1, 4, 32)).reshape(-1, 8, 32)


def _k_codes(b, q, bits):
    """d * scale * q - dmin * min, per 32-value sub-block (q: (n, 8, 32))."""
    scales, mins = _k_scales_mins(b[:, 4:16])
    return Codes(q.reshape(-1, 256), _f16(b, 0) * scales, -(_f16(b, 2) * mins), bits, 0, 32)


def _q4_k(b):  # d, dmin, 12 bytes of scales/mins, 128 bytes of 4-bit values; 8 sub-blocks of 32
    return _k_codes(b, _k_nibbles(b[:, 16:144]), 4)


def _q5_k(b):  # as Q4_K plus 32 bytes of high bits: bit s of byte l belongs to sub-block s, element l
    high = (b[:, 16:48].unsqueeze(1) >> torch.arange(8, dtype=torch.uint8, device=b.device).view(1, 8, 1)) & 1
    return _k_codes(b, _k_nibbles(b[:, 48:176]) | (high << 4), 5)


def _q6_k(b):  # 128 bytes low nibbles, 64 bytes 2-bit highs, 16 int8 scales, d; two halves of 128
    n = len(b)
    low = b[:, 0:128].reshape(n, 2, 2, 32)  # (half, which 32 bytes, byte)
    low = torch.stack([low & 0x0F, low >> 4], dim=2).reshape(n, 2, 4, 32)  # order: q1 q2 q3 q4
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=b.device).view(1, 1, 4, 1)
    high = (b[:, 128:192].reshape(n, 2, 1, 32) >> shifts) & 3
    scales = b[:, 192:208].view(torch.int8).float().mul_(_f16(b, 208))  # one scale per 16 values
    return Codes((low | (high << 4)).reshape(n, 256), scales, None, 6, 32, 16)


_BLOCK_DECODERS = {
    T.Q4_0: _q4_0, T.Q4_1: _q4_1, T.Q5_0: _q5_0, T.Q5_1: _q5_1, T.Q8_0: _q8_0,
    T.Q4_K: _q4_k, T.Q5_K: _q5_k, T.Q6_K: _q6_k,
}
_FLOAT_TYPES = {T.F32: torch.float32, T.F16: torch.float16, T.BF16: torch.bfloat16}
SUPPORTED_TYPES = tuple(t.name for t in (*_FLOAT_TYPES, *_BLOCK_DECODERS))


def is_supported(ggml_type: T) -> bool:
    return ggml_type in _FLOAT_TYPES or ggml_type in _BLOCK_DECODERS


def unsupported_type_error(tensor_name: str, ggml_type: T) -> CheckpointError:
    return CheckpointError(
        f"GGUF tensor {tensor_name} uses quantization type {ggml_type.name}, which litevllm-plugin-gguf "
        f"does not support (supported: {', '.join(SUPPORTED_TYPES)})")


def dequantize(raw: torch.Tensor, ggml_type: T, shape: tuple[int, ...], dtype: torch.dtype | None = None,
               name: str = "<tensor>") -> torch.Tensor:
    """Decode a tensor's raw uint8 bytes into ``shape`` values of ``dtype``.

    ``dtype=None`` keeps stored floats as they are and decodes blocks to float32. A float tensor
    already in ``dtype`` comes back as a view of ``raw`` (no copy)."""
    if ggml_type in _FLOAT_TYPES:
        values = raw.view(_FLOAT_TYPES[ggml_type]).reshape(shape)
        return values if dtype is None else values.to(dtype)
    if ggml_type not in _BLOCK_DECODERS:
        raise unsupported_type_error(name, ggml_type)
    values = decode_codes(raw, ggml_type).values().reshape(shape)
    return values.to(dtype or torch.float32)


def is_block_type(ggml_type: T) -> bool:
    return ggml_type in _BLOCK_DECODERS


@dataclass(frozen=True)
class GGUFBlocks:
    """One GGUF tensor as stored: its raw uint8 bytes, ggml type and torch-order shape. The format
    yields these instead of values for linear weights when the ``gguf`` scheme keeps them packed."""
    raw: torch.Tensor
    ggml_type: T
    shape: tuple[int, ...]
    name: str

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return dequantize(self.raw, self.ggml_type, self.shape, dtype, self.name)

    def to(self, device: torch.device) -> "GGUFBlocks":
        return replace(self, raw=self.raw.to(device))


def decode_codes(raw: torch.Tensor, ggml_type: T) -> Codes:
    """A block-quantized tensor's raw uint8 bytes as integer codes and per-group floats."""
    return _BLOCK_DECODERS[ggml_type](raw.view(-1, GGML_QUANT_SIZES[ggml_type][1]))
