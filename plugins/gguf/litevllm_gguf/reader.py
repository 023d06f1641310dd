"""A small, fast GGUF header parser.

`gguf.GGUFReader` builds a numpy view per metadata element, which takes seconds on a vocabulary
of 50k tokens. This parser walks the header with `struct` instead (tens of milliseconds) and
leaves the tensor data in a memory map, so nothing is read until a tensor is asked for.
Layout: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np
import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from litevllm.plugin_api import CheckpointError

# fixed-size metadata value types → struct format
_SCALAR_FORMATS = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?", GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}
_DEFAULT_ALIGNMENT = 32


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # torch order: the row length (ggml's ne0) is last
    ggml_type: GGMLQuantizationType
    start: int  # absolute byte offset in the file
    nbytes: int


class _Cursor:
    """Reads little-endian values from a byte buffer, failing cleanly past its end."""

    def __init__(self, buf: np.ndarray):
        self.buf, self.pos, self.size = buf, 0, len(buf)

    def need(self, nbytes: int) -> None:
        if nbytes < 0 or self.pos + nbytes > self.size:
            raise CheckpointError(f"header needs byte {self.pos + nbytes} but the file ends at {self.size}")

    def scalar(self, fmt: str):
        width = struct.calcsize(fmt)
        self.need(width)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += width
        if fmt == "<f":  # shortest decimal that round-trips float32: 1e-05, not 9.99999974e-06
            value = float(str(np.float32(value)))
        return value

    def string(self) -> str:
        length = self.scalar("<Q")
        self.need(length)
        text = bytes(self.buf[self.pos:self.pos + length]).decode("utf-8", errors="replace")
        self.pos += length
        return text

    def value(self, value_type: int):
        if value_type == GGUFValueType.STRING:
            return self.string()
        if value_type == GGUFValueType.ARRAY:
            item_type, count = self.scalar("<I"), self.scalar("<Q")
            if item_type in _SCALAR_FORMATS:  # numeric arrays: one numpy read
                fmt = _SCALAR_FORMATS[GGUFValueType(item_type)]
                width = struct.calcsize(fmt)
                self.need(count * width)
                values = np.frombuffer(self.buf, np.dtype(fmt), count, self.pos).tolist()
                self.pos += count * width
                return values
            self.need(count * 8)  # every element takes at least its 8-byte length
            return [self.value(item_type) for _ in range(count)]
        if value_type not in _SCALAR_FORMATS:
            raise CheckpointError(f"unknown metadata value type {value_type} at byte {self.pos}")
        return self.scalar(_SCALAR_FORMATS[GGUFValueType(value_type)])


class GGUFFile:
    """Metadata and tensor table of one GGUF file; tensor bytes stay memory-mapped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            # copy-on-write: writable for torch.from_numpy, yet never written back to the file
            self._bytes = np.memmap(self.path, dtype=np.uint8, mode="c")
        except (OSError, ValueError) as exc:  # ValueError: an empty file
            raise CheckpointError(f"cannot read GGUF file {self.path}: {exc}") from None
        try:
            self.metadata, self.tensors = self._parse()
        except CheckpointError as exc:
            raise CheckpointError(f"{self.path} is not a valid GGUF file (truncated or corrupt?): {exc}") from None
        self.architecture: str = self.metadata.get("general.architecture", "")

    def _parse(self) -> tuple[dict, dict[str, TensorInfo]]:
        cur = _Cursor(self._bytes)
        cur.need(4)
        if bytes(self._bytes[:4]) != b"GGUF":
            raise CheckpointError("it does not start with the GGUF magic bytes")
        cur.pos = 4
        version = cur.scalar("<I")
        if version not in (2, 3):
            raise CheckpointError(f"GGUF version {version} is not supported (only 2 and 3)")
        tensor_count, kv_count = cur.scalar("<Q"), cur.scalar("<Q")
        cur.need(8 * (tensor_count + kv_count))  # a sanity bound against garbage counts

        metadata = {}
        for _ in range(kv_count):
            key = cur.string()
            metadata[key] = cur.value(cur.scalar("<I"))

        entries = []
        for _ in range(tensor_count):
            name = cur.string()
            n_dims = cur.scalar("<I")
            dims = [cur.scalar("<Q") for _ in range(n_dims)]
            type_id, offset = cur.scalar("<I"), cur.scalar("<Q")
            entries.append((name, tuple(reversed(dims)), type_id, offset))

        alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
        data_start = -(-cur.pos // alignment) * alignment
        tensors = {}
        for name, shape, type_id, offset in entries:
            try:
                ggml_type = GGMLQuantizationType(type_id)
            except ValueError:
                raise CheckpointError(f"tensor {name} has unknown ggml type id {type_id}") from None
            block_size, block_bytes = GGML_QUANT_SIZES[ggml_type]
            info = TensorInfo(name, shape, ggml_type, data_start + offset,
                              prod(shape) // block_size * block_bytes)
            if info.start + info.nbytes > cur.size:
                raise CheckpointError(
                    f"tensor {name} ends at byte {info.start + info.nbytes} but the file has {cur.size} bytes")
            tensors[name] = info
        return metadata, tensors

    def raw(self, info: TensorInfo) -> torch.Tensor:
        """The tensor's stored bytes as a flat uint8 tensor backed by the memory map."""
        return torch.from_numpy(self._bytes[info.start:info.start + info.nbytes])
