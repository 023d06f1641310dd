"""Host tensors: Python int lists to CPU tensors (about 3x faster than ``torch.tensor`` on long
lists), and copies between host and device that do not wait for queued GPU work."""
from __future__ import annotations

from array import array

import torch

_CODES = {torch.int64: "q", torch.int32: "i"}


def int_tensor(values, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """A 1-D CPU tensor of ``values`` (any iterable of ints), through a typed array buffer."""
    buf = array(_CODES[dtype], values)
    return torch.frombuffer(buf, dtype=dtype) if len(buf) else torch.empty(0, dtype=dtype)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (on the CPU) on ``device`` without the host waiting for queued GPU work: a copy
    from pageable memory waits for the stream, so CUDA copies go through pinned memory."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def to_device_aligned(parts: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """1-D CPU tensors of one dtype on ``device`` through one copy, each view starting at a
    16-byte boundary: Triton specialises a kernel on its pointers' alignment, so a view at an
    odd offset would compile (mid-serving) a variant that start-up never met."""
    align = 16 // parts[0].element_size()
    starts, end = [], 0
    for p in parts:
        starts.append(end)
        end += -(-p.numel() // align) * align
    buf = torch.zeros(end, dtype=parts[0].dtype)
    for p, at in zip(parts, starts):
        buf[at:at + p.numel()] = p
    buf = to_device(buf, device)
    return [buf[at:at + p.numel()] for p, at in zip(parts, starts)]


class HostCopy:
    """Device tensors copied to pinned host memory as soon as the work queued so far made them;
    ``get()`` waits for that copy alone, not for the work queued after it (async scheduling)."""

    def __init__(self, *tensors: torch.Tensor):
        self.event = None
        if tensors and tensors[0].device.type == "cuda":
            tensors = tuple(torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                            .copy_(t, non_blocking=True) for t in tensors)
            self.event = torch.cuda.Event()
            self.event.record()
        self.tensors = tensors

    def get(self) -> tuple[torch.Tensor, ...]:
        if self.event is not None:
            self.event.synchronize()
        return self.tensors
