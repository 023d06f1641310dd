"""Measured GEMV configs per GPU: ``configs/<device>.json`` from benchmarks/bench_fp8.py --pick.

``{"gemv": {"M,K,N": cfg or null}}`` (null: the ``tl.dot`` kernel won that shape); other keys
(the measured times) are for people. An entry serves the nearest measured M for the same
(K, N), by ratio, ties to the larger M (its config holds more rows of accumulators, so it
fits fewer too): with M = 1 and 4 measured, M = 2..4 take the M = 4 entry. Picks made in this
process (``set_pick``) override the file. Other GPUs, the CPU and unlisted shapes: no entry.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from litevllm_triton.kernels.fused_moe import device_name

CONFIG_DIR = Path(__file__).parent / "configs"
_picks: dict[str, dict] = {}  # device name -> {(m, k, n): cfg or None}, set by the benchmark


@functools.lru_cache(maxsize=None)
def load(name: str) -> dict:
    """{(m, k, n): cfg or None} of ``configs/<name>.json`` ({} when there is none)."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        return {}
    gemv = json.loads(path.read_text())["gemv"]
    return {tuple(int(v) for v in key.split(",")): cfg for key, cfg in gemv.items()}


def set_pick(device: torch.device, m: int, k: int, n: int, cfg: dict | None) -> None:
    """Use ``cfg`` (None: ``tl.dot``) for this shape on ``device`` in this process."""
    _picks.setdefault(device_name(device), {})[(m, k, n)] = cfg
    lookup.cache_clear()


def entries(device: torch.device) -> dict:
    """The file's entries for ``device`` with this process's picks over them."""
    name = device_name(device)
    return {**load(name), **_picks.get(name, {})}


@functools.lru_cache(maxsize=4096)  # per decode step and layer: keep it a dict hit
def lookup(m: int, k: int, n: int, device: torch.device) -> tuple[bool, dict | None]:
    """(found, cfg) for M rows of x @ [N, K]^T: cfg None means the ``tl.dot`` kernel (the
    caller must not change cfg)."""
    table = entries(device)
    ms = [em for em, ek, en in table if (ek, en) == (k, n)]
    if not ms:
        return False, None
    best = min(ms, key=lambda x: (abs(x - m) / max(x, m), -x))
    cfg = table[(best, k, n)]
    return True, cfg
