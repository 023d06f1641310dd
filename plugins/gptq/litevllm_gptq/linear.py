"""``packed_linear``: the one entry point that runs ``x @ W (+ bias)`` for a ``PackedWeight``.

Other plugins (GGUF kept packed) call this; it picks the Triton kernel for the shape on CUDA and
the torch reference elsewhere.
"""
from __future__ import annotations

import torch

from litevllm_gptq.layout import PackedWeight, matmul_ref


def packed_linear(x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x [..., K] @ W [K, N] (+ bias [N])`` -> ``[..., N]`` in ``x.dtype``."""
    y = matmul_ref(x, w)  # replaced by the kernel dispatch
    return y if bias is None else y + bias
