"""Host tensors: Python int lists to CPU tensors (about 3x faster than ``torch.tensor`` on long
lists), and copies between host and device that do not wait for queued GPU work."""
from __future__ import annotations

import threading
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
    return to_device_packed([t], device)[0]


def to_device_packed(parts: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """CPU tensors (any dtypes and shapes) on ``device`` through one copy, each starting at a
    16-byte boundary: Triton specialises a kernel on its pointers' alignment, so a view at an
    odd offset would compile (mid-serving) a variant that start-up never met. CUDA copies are
    staged in reused pinned buffers (``_PinnedRing``), not a new pinned tensor each."""
    if device.type != "cuda":
        return [p.to(device) for p in parts]
    if torch.cuda.is_current_stream_capturing():  # a graph would keep reading the ring's slot
        return [p.pin_memory().to(device, non_blocking=True) for p in parts]
    sizes = [p.numel() * p.element_size() for p in parts]
    starts, end = [], 0
    for n in sizes:
        starts.append(end)
        end += -(-n // 16) * 16
    ring = _rings.get(device) or _rings.setdefault(device, _PinnedRing())
    with ring.lock:
        slot, buf = ring.take(end)
        for p, at, n in zip(parts, starts, sizes):
            buf[at:at + n].view(p.dtype).copy_(p.reshape(-1))
        out = buf[:end].to(device, non_blocking=True)
        ring.events[slot].record()
    return [out[at:at + n].view(p.dtype).view(p.shape) for p, at, n in zip(parts, starts, sizes)]


class _PinnedRing:
    """Pinned host buffers reused round robin for copies to one device. A slot is written again
    only once its last copy has run (its event): with 16 slots that wait is for a copy queued 16
    copies ago, which only a GPU far behind the host still holds."""
    SLOTS = 16

    def __init__(self):
        self.lock = threading.Lock()
        self.bufs: list[torch.Tensor | None] = [None] * self.SLOTS
        self.events = [torch.cuda.Event() for _ in range(self.SLOTS)]
        self.next = 0

    def take(self, nbytes: int) -> tuple[int, torch.Tensor]:
        slot = self.next
        self.next = (slot + 1) % self.SLOTS
        self.events[slot].synchronize()  # not recorded yet: returns at once
        buf = self.bufs[slot]
        if buf is None or buf.numel() < nbytes:
            buf = self.bufs[slot] = torch.empty(max(nbytes, 1 << 16), dtype=torch.uint8,
                                                pin_memory=True)
        return slot, buf


_rings: dict[torch.device, _PinnedRing] = {}


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
