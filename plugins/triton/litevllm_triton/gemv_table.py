"""Per-GPU table of skinny-GEMM tiles: ``gemv_configs/<device>.json``, written by
benchmarks/bench_gemv.py. Keys are ``"linear:N:K"`` / ``"gated:I:K"``, then the row count bucket
(1, 2, 4, ..., 256): a tile config, or null where cuBLAS was faster. Shapes and GPUs without an
entry keep cuBLAS. ``LITEVLLM_GEMV=0`` turns the Triton GEMV off (the baseline for benchmarks).
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import torch

from litevllm_triton.kernels._common import device_name

CONFIG_DIR = Path(__file__).resolve().parent / "gemv_configs"
M_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def table_key(kind: str, n: int, k: int) -> str:
    return f"{kind}:{n}:{k}"


@functools.lru_cache(maxsize=None)
def _load(device: str) -> dict:
    path = CONFIG_DIR / f"{device}.json"
    if os.environ.get("LITEVLLM_GEMV", "1") == "0" or not path.is_file():
        return {}
    return json.loads(path.read_text())


def gemv_config(kind: str, m: int, n: int, k: int, device: torch.device) -> dict | None:
    """The tuned tile for ``m`` rows (the smallest bucket >= m), or None: use cuBLAS."""
    if m > M_BUCKETS[-1] or m < 1:
        return None
    entry = _load(device_name(device)).get(table_key(kind, n, k))
    if not entry:
        return None
    bucket = next(b for b in M_BUCKETS if b >= m)
    return entry.get(str(bucket))
