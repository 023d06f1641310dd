"""What every layer needs at construction: ops, attention backend, quantization, dtype."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from litevllm.attention.backend import AttentionBackend
from litevllm.quant.base import QuantConfig


@dataclass
class ModelContext:
    ops: object                 # litevllm.ops.Ops
    attn: AttentionBackend
    quant: QuantConfig
    dtype: torch.dtype
    device: torch.device
    max_model_len: int
