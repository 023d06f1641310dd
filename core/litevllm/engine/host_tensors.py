"""Host tensors: Python int lists to CPU tensors (about 3x faster than ``torch.tensor`` on long
lists), and copies between host and device that do not wait for queued GPU work."""
from __future__ import annotations

import threading
from array import array

import torch

_CODES = {torch.int64: "q", torch.int32: "i"}


def int_tensor(values, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """A 1-D CPU tensor of ``values`` (any iterable of ints), through a typed array buffer (an
    array of the dtype's type code is used as is: the tensor shares its memory)."""
    code = _CODES[dtype]
    buf = values if type(values) is array and values.typecode == code else array(code, values)
    return torch.frombuffer(buf, dtype=dtype) if len(buf) else torch.empty(0, dtype=dtype)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (on the CPU) on ``device`` without the host waiting for queued GPU work: a copy
    from pageable memory waits for the stream, so CUDA copies go through pinned memory."""
    return to_device_packed([t], device)[0]


def to_device_packed(parts: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """CPU tensors (any dtypes and shapes) on ``device`` through one copy, each starting at a
    16-byte boundary: Triton specialises a kernel on its pointers' alignment, so a view at an
    odd offset would compile (mid-serving) a variant that start-up never met. CUDA copies are
    staged in reused pinned buffers (``_PinnedRing``), not a new pinned tensor each."""
    for p in parts:
        if p.device.type != "cpu":
            raise ValueError(f"to_device takes CPU tensors, got one on {p.device}")
    if device.type != "cuda":
        return [p.to(device) for p in parts]
    sizes = [p.numel() * p.element_size() for p in parts]
    starts, end = [], 0
    for n in sizes:
        starts.append(end)
        end += -(-n // 16) * 16
    with torch.cuda.device(device):  # its stream carries the copy and the slot's event
        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError("host-to-device input copies cannot be captured in a CUDA graph "
                               "(a replay would read a pinned buffer reused since)")
        index = torch.cuda.current_device()  # "cuda" and "cuda:0" share a ring
        ring = _rings.get(index) or _rings.setdefault(index, _PinnedRing())
        with ring.lock:
            slot, buf = ring.take(end)
            for p, at, n in zip(parts, starts, sizes):
                buf[at:at + n].view(p.dtype).copy_(p.reshape(-1))
            out = buf[:end].to(device, non_blocking=True)
            if slot is not None:
                ring.events[slot].record()
    return [out[at:at + n].view(p.dtype).view(p.shape) for p, at, n in zip(parts, starts, sizes)]


class _PinnedRing:
    """Pinned host buffers reused round robin for copies to one device. A slot whose last copy
    has not run yet (its event) is not waited for: that copy takes a one-off pinned buffer, as
    does one larger than ``KEEP_BYTES`` (a structured-output bitmask), so the ring never makes
    the host wait for the GPU. The slots start as views of one pinned block (one host
    allocation, at the first copy: a pinned allocation costs ~0.1-0.3 ms, a step's inputs
    should not pay it); a slot that needs more gets a buffer of its own."""
    SLOTS = 16
    # 256 sequences' block tables at 256 blocks each (256 KiB) plus a 4,096-token step's ids
    # (32 KiB), or 16 decode steps' inputs at batch 256
    SLOT_BYTES = 512 << 10
    KEEP_BYTES = 1 << 20

    def __init__(self):
        self.lock = threading.Lock()
        block = torch.empty(self.SLOTS * self.SLOT_BYTES, dtype=torch.uint8, pin_memory=True)
        self.bufs = list(block.view(self.SLOTS, self.SLOT_BYTES))
        self.events = [torch.cuda.Event() for _ in range(self.SLOTS)]
        self.next = 0

    def take(self, nbytes: int) -> tuple[int | None, torch.Tensor]:
        """(slot, buffer of >= nbytes); slot None for a one-off buffer (the caching host
        allocator keeps it until its copy has run)."""
        slot = self.next
        if nbytes > self.KEEP_BYTES or not self.events[slot].query():
            return None, torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        self.next = (slot + 1) % self.SLOTS
        buf = self.bufs[slot]
        if buf.numel() < nbytes:
            buf = self.bufs[slot] = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        return slot, buf


_rings: dict[int, _PinnedRing] = {}


class HostCopy:
    """Device tensors copied to pinned host memory as soon as the work queued so far made them;
    ``get()`` waits for that copy alone, not for the work queued after it (async scheduling)."""

    def __init__(self, *tensors: torch.Tensor):
        self.event = None
        if tensors and tensors[0].device.type == "cuda":
            with torch.cuda.device(tensors[0].device):  # the event on the copies' stream
                tensors = tuple(torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                                .copy_(t, non_blocking=True) for t in tensors)
                self.event = torch.cuda.Event()
                self.event.record()
        self.tensors = tensors

    def get(self) -> tuple[torch.Tensor, ...]:
        if self.event is not None:
            self.event.synchronize()
        return self.tensors
