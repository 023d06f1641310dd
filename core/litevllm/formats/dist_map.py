"""``importlib.metadata.packages_distributions()`` kept on disk from one start to the next.

transformers before 5.2x builds this map (import name -> distributions) when it is imported,
reading the file list of every installed distribution: seconds in large environments. Inside
``cached_packages_distributions()`` the function returns the map stored by an earlier start
(``$LITEVLLM_CACHE/packages_distributions.json``, default ``~/.cache/litevllm``) if the
``sys.path`` directories it was built from are the same and unmodified (installing, upgrading
or removing a distribution modifies its directory), else builds and stores it. Any problem
with the file falls back to building the map as usual.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path

from litevllm.formats.cache_files import cache_dir, store_json


def cache_file() -> Path:
    return cache_dir() / "packages_distributions.json"


def path_state() -> str:
    """A digest of the ``sys.path`` entries and their modification times."""
    entries = []
    for entry in sys.path:
        try:
            entries.append([entry, os.stat(entry or ".").st_mtime_ns])
        except OSError:
            entries.append([entry, None])
    return hashlib.sha256(json.dumps([sys.version, entries]).encode()).hexdigest()


def packages_distributions(build=importlib.metadata.packages_distributions) -> dict:
    """``build()``'s map, from the cache file while ``sys.path`` is as it was stored."""
    path, state = cache_file(), path_state()
    try:
        stored = json.loads(path.read_text())
        if stored["state"] == state:
            return stored["map"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    mapping = build()
    store_json(path, {"state": state, "map": mapping})
    return mapping


@contextlib.contextmanager
def cached_packages_distributions():
    """Inside, ``importlib.metadata.packages_distributions()`` is served from the cache file."""
    real = importlib.metadata.packages_distributions
    importlib.metadata.packages_distributions = lambda: packages_distributions(real)
    try:
        yield
    finally:
        importlib.metadata.packages_distributions = real
