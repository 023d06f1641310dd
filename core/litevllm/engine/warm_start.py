"""What a start on CUDA skips when an earlier one with the same set-up found its kernels cached.

Start-up's kernel precompile (engine/precompile.py) runs a dry pass even when Triton's cache
holds every kernel variant, and starts its process pool first. A start whose dry pass found
nothing to compile stores a marker, ``<cache_dir>/warm_start/<key>.json``, listing the cache
files of the variants it met. The key hashes what decides which variants a start needs and
whether they are on disk: the model's config.json, the engine options, the torch, triton and
transformers versions, the GPU, Triton's cache directory, the ``LITEVLLM_*``/``TRITON_*``
environment and the size and mtime of every source file of the ``litevllm*`` packages (an
edited kernel is a new key). A start whose key has a marker whose files all exist starts no
pool and runs no dry pass: its launches load the kernels from Triton's cache as they always do.
A marker that cannot be read or checked means a start as without it.

Triton hashes its own files (``triton_key``, ~0.3 s, once per process) before it loads or
compiles the first kernel; ``prefetch_triton_key`` starts that in a thread while the config and
model load (hashlib releases the GIL on large buffers).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import sys
import threading
from pathlib import Path

import attrs

from litevllm.engine import precompile
from litevllm.engine.precompile import Precompiler
from litevllm.formats.cache_files import cache_dir, store_json

log = logging.getLogger("litevllm")

# engine options that change no kernel (the model is keyed by its config, not its path)
IGNORED_OPTIONS = ("model", "seed", "tokenizer")
IGNORED_ENV = ("LITEVLLM_PRECOMPILE", "LITEVLLM_CACHE")


def prefetch_triton_key() -> threading.Thread | None:
    """Compute Triton's ``triton_key()`` (lru-cached) in a daemon thread; failures are silent."""
    try:
        from triton.runtime.cache import triton_key  # imported here: the thread only hashes
    except Exception:
        return None

    def run():
        try:
            triton_key()
        except Exception:
            pass
    thread = threading.Thread(target=run, name="litevllm-triton-key", daemon=True)
    thread.start()
    return thread


def _stat(path: str | Path) -> list[int]:
    st = os.stat(path)
    return [st.st_mtime_ns, st.st_size]


def source_files() -> list:
    """[path, mtime_ns, size] of every .py file of the imported ``litevllm*`` packages."""
    out = []
    for name, module in sorted(sys.modules.items()):
        if not name.startswith("litevllm") or "." in name:
            continue
        for top in getattr(module, "__path__", None) or [getattr(module, "__file__", None)]:
            if top is None:
                continue
            for root, dirs, files in os.walk(top) if os.path.isdir(top) else [("", [], [top])]:
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                out += [[p, *_stat(p)] for p in (os.path.join(root, f) for f in sorted(files))
                        if p.endswith(".py")]
    return out


def model_source(path: Path) -> str:
    """A checkpoint dir's config.json hash, else the path, size and mtime of its file(s)."""
    config = path / "config.json"
    if config.is_file():
        return hashlib.sha256(config.read_bytes()).hexdigest()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    return json.dumps([[str(p.resolve()), *_stat(p)] for p in files])


def gpu_identity(device) -> list:
    import torch
    return [torch.cuda.get_device_name(device), list(torch.cuda.get_device_capability(device))]


def triton_cache_dir() -> str:
    import triton
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return str(knobs.cache.dir)
    from triton.runtime.cache import default_cache_dir
    return os.environ.get("TRITON_CACHE_DIR") or default_cache_dir()


def start_key(config, model_path: Path, device) -> str:
    """The hash of everything that decides a start's kernel variants and where they are."""
    import torch
    import triton
    options = attrs.asdict(config, filter=lambda a, v: a.name not in IGNORED_OPTIONS)
    parts = {
        "options": options, "model": model_source(Path(model_path)),
        "versions": [torch.__version__, triton.__version__,
                     importlib.metadata.version("transformers")],
        "gpu": gpu_identity(device), "triton_cache": triton_cache_dir(),
        "env": sorted((k, v) for k, v in os.environ.items()
                      if k.startswith(("LITEVLLM_", "TRITON_")) and k not in IGNORED_ENV),
        "sources": source_files(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def marker_path(key: str) -> Path:
    return cache_dir() / "warm_start" / f"{key}.json"


def marker_holds(key: str) -> bool:
    """Whether ``key``'s marker is there, is for ``key`` and its cache files all exist."""
    data = json.loads(marker_path(key).read_text())
    files = data["kernel_files"]
    return data["key"] == key and isinstance(files, list) and all(map(os.path.isfile, files))


class WarmStart:
    """One engine start's marker: looked up before the pool starts, stored after a warm start."""

    def __init__(self, config, model_path: Path, device):
        self.device, self.key, self.hit = device, None, False
        if precompile.workers_for(device) < 1:  # no precompile: nothing to skip
            return
        try:
            self.key = start_key(config, model_path, device)
            self.hit = marker_holds(self.key)
        except FileNotFoundError:
            pass
        except Exception as e:
            log.debug("warm-start marker not used (%s: %s)", type(e).__name__, e)

    def precompiler(self) -> Precompiler | None:
        """None on a warm start (no pool, no dry pass), else a started ``Precompiler``."""
        if self.hit:
            log.info("warm start: the Triton kernels are cached (marker %s); no precompile",
                     self.key[:12])
            return None
        return Precompiler.start(self.device)

    def finish(self, precompiler: Precompiler | None) -> None:
        """Store the marker when ``precompiler``'s dry pass ran and found nothing to compile."""
        if self.key is None or precompiler is None or precompiler.missing != 0:
            return
        try:
            store_json(marker_path(self.key), {"key": self.key,
                                               "kernel_files": sorted(set(precompiler.on_disk))})
        except Exception as e:
            log.debug("warm-start marker not stored (%s: %s)", type(e).__name__, e)
