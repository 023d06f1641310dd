"""Which FP8 path a device takes, said once per device in the log."""
from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger("litevllm")
W8A8, WEIGHT_ONLY, TORCH = "w8a8", "weight-only", "torch"
_said: set = set()


@functools.lru_cache(maxsize=None)
def has_fp8_tensor_cores(device: torch.device) -> bool:
    """FP8 ``tl.dot`` needs compute capability 8.9 (Ada) or 9.0+ (Hopper)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def pick_path(device: torch.device) -> str:
    """W8A8 on FP8 GPUs; Triton weight-only dequant on other GPUs; torch dequant on the CPU."""
    path = W8A8 if has_fp8_tensor_cores(device) else WEIGHT_ONLY if device.type == "cuda" \
        else TORCH
    key = (str(device), path)
    if key not in _said:
        _said.add(key)
        if path == W8A8:
            log.info("fp8: W8A8 path on %s (FP8 tensor cores; dynamic per-token activation "
                     "scales unless the checkpoint gives static ones)", _name(device))
        else:
            log.warning("fp8: %s has no FP8 tensor cores: weight-only path (fp8 weights "
                        "dequantized to the activation dtype in the matmul; activations are not "
                        "quantized)", _name(device))
    return path


def _name(device: torch.device) -> str:
    if device.type != "cuda":
        return f"the {device.type}"
    cc = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return f"{torch.cuda.get_device_name(device)} (compute capability {cc})"
