"""Where LitevLLM keeps its files between runs, and how it writes them."""
from __future__ import annotations

import json
import os
from pathlib import Path


def cache_dir() -> Path:
    """``$LITEVLLM_CACHE``, default ``~/.cache/litevllm``."""
    return Path(os.environ.get("LITEVLLM_CACHE") or Path.home() / ".cache" / "litevllm").expanduser()


def store_json(path: Path, data) -> None:
    """Write ``data`` to ``path`` whole (readers see the old file or the new one); an
    unwritable cache is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        pass
