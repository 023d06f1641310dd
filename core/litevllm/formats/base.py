"""The checkpoint-format contract.

A format turns a path into three things: an HF-style config, a stream of HF-named tensors, and
(optionally) a tokenizer. Models only ever see HF parameter names, so a new format (GGUF, a
vendor layout) needs no model changes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: missing, truncated, corrupt or unsupported."""


class CheckpointFormat:
    """Subclass and register through the ``register_checkpoint_formats`` hook."""

    name = "base"

    def __init__(self, path: Path):
        self.path = Path(path)

    #: True if the format can hand any scheme values (GGUF dequantizes its blocks), so the
    #: user may load a quantized checkpoint with another ``quantization``.
    dequantizes = False

    @classmethod
    def detect(cls, path: Path) -> bool:
        """True if this format can read ``path`` (a file or a directory)."""
        raise NotImplementedError

    def load_config(self):
        """Return a ``transformers.PretrainedConfig`` describing the model."""
        raise NotImplementedError

    def set_quantization(self, quant) -> None:
        """Called by the engine with its ``QuantConfig`` before ``iter_tensors``. A format whose
        scheme takes tensors as stored (GGUF's quantized blocks) yields them only to that scheme;
        any other (e.g. ``quantization="none"``) gets values."""

    def iter_tensors(self, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(hf_name, tensor)`` pairs. Tensors may be mmap-backed; the loader copies them
        into the model's parameters one at a time. ``dtype`` is the engine's dtype: formats that
        must dequantize should produce it directly."""
        raise NotImplementedError

    def load_tokenizer(self):
        """Return a HF tokenizer, or None when the checkpoint ships none."""
        return None
