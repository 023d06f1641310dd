"""Small host-side helpers shared by the fp8 kernel wrappers."""
from __future__ import annotations

import torch

FP8_DTYPES = (torch.float8_e4m3fn, torch.uint8)  # fp8 tensors, or their uint8 bits
_sms: dict = {}


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (cached; 8 stands in for the CPU interpreter)."""
    if device.type != "cuda":
        return 8
    if device not in _sms:
        _sms[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return _sms[device]
