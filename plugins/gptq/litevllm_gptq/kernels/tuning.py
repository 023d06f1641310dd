"""Tuned tile configs per GPU: ``configs/<device>.json`` written by benchmarks/bench_quant.py.

``{"gemv": {"[M,]b<bits>,K,N": cfg}, "gemm": {"M,b<bits>,K,N": cfg}, "policy": {...}}``;
entries keyed by M are looked up at the nearest measured M for the same (K, N) (a gemv entry
without M serves every M). Unlisted shapes use each kernel's ``default_config``.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

CONFIG_DIR = Path(__file__).parent / "configs"
_loaded: dict[str, dict] = {}


@functools.lru_cache(maxsize=None)
def device_name(device: torch.device) -> str:
    if device.type != "cuda":
        return device.type
    return torch.cuda.get_device_name(device).replace(" ", "_")


def table(device: torch.device) -> dict:
    name = device_name(device)
    if name not in _loaded:
        path = CONFIG_DIR / f"{name}.json"
        _loaded[name] = json.loads(path.read_text()) if path.is_file() else {}
    return _loaded[name]


def set_table(device: torch.device, data: dict) -> None:
    """Use ``data`` for ``device`` in this process (the tuner)."""
    _loaded[device_name(device)] = data
    lookup.cache_clear()


@functools.lru_cache(maxsize=4096)
def lookup(kind: str, m: int, bits: int, k: int, n: int, device: torch.device) -> dict | None:
    entries = table(device).get(kind, {})
    shape = f"b{bits},{k},{n}"
    ms = [int(key.split(",")[0]) for key in entries if key.endswith("," + shape)]
    if not ms:
        return entries.get(shape)
    best = min(ms, key=lambda x: (abs(x - m) / max(x, m), x))
    return entries[f"{best},{shape}"]


def policy(device: torch.device) -> dict:
    return table(device).get("policy", {})
