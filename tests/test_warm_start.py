"""The warm-start marker (engine/warm_start.py) on the CPU: what its key depends on, engine starts
with the CUDA-only parts faked (the device check, the GPU's name, the compile pool), and the
Triton-key thread."""
import contextlib
import json
import shutil
import sys
import threading
import types

import pytest
import torch

from litevllm import LLM, SamplingParams
from litevllm.config import engine_config
from litevllm.engine import precompile, warm_start
from litevllm.engine.precompile import Precompiler

GPU = ["Fake H200", [9, 0]]


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("LITEVLLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(warm_start, "gpu_identity", lambda device: GPU)


def key(model, **options):
    return warm_start.start_key(engine_config(model, **options), model, torch.device("cuda"))


def test_key_changes_with_what_shapes_kernels_only(fake_gpu, llama_dir, tmp_path, monkeypatch):
    base = key(llama_dir)
    assert key(llama_dir) == base
    # the same config elsewhere, another seed or tokenizer, the pool size: the same kernels
    copy = tmp_path / "copy"
    shutil.copytree(llama_dir, copy)
    assert key(copy, seed=7, tokenizer=str(llama_dir)) == base
    monkeypatch.setenv("LITEVLLM_PRECOMPILE", "3")
    assert key(llama_dir) == base
    changed = [key(llama_dir, block_size=32), key(llama_dir, dtype="float16"),
               key(llama_dir, kv_cache_dtype="fp8"), key(llama_dir, max_num_seqs=8),
               key(llama_dir, max_num_batched_tokens=512), key(llama_dir, max_model_len=64),
               key(llama_dir, max_piecewise_graph_tokens=0), key(llama_dir, enforce_eager=True),
               key(llama_dir, kernels="torch")]
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    changed.append(key(copy))
    for var, value in (("TRITON_CACHE_DIR", str(tmp_path / "triton")), ("LITEVLLM_PDL", "1")):
        monkeypatch.setenv(var, value)
        changed.append(key(llama_dir))
        monkeypatch.delenv(var)
    assert key(llama_dir) == base
    monkeypatch.setattr(warm_start, "gpu_identity", lambda device: ["Fake H100", [9, 0]])
    changed.append(key(llama_dir))
    monkeypatch.setattr(warm_start, "gpu_identity", lambda device: GPU)
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    changed.append(key(llama_dir))
    assert len(set(changed)) == len(changed) and base not in changed


def test_key_follows_the_litevllm_sources(fake_gpu, llama_dir, tmp_path, monkeypatch):
    """An edited file of any imported ``litevllm*`` package (a kernel plugin) is a new key."""
    pkg = tmp_path / "litevllm_fakekernels"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "kernel.py").write_text("BLOCK = 64\n")
    module = types.ModuleType("litevllm_fakekernels")
    module.__path__ = [str(pkg)]
    monkeypatch.setitem(sys.modules, "litevllm_fakekernels", module)
    base = key(llama_dir)
    assert [str(pkg / "kernel.py")] == [f[0] for f in warm_start.source_files()
                                        if f[0].endswith("kernel.py") and str(pkg) in f[0]]
    (pkg / "kernel.py").write_text("BLOCK = 128\n")
    assert key(llama_dir) != base


class FakePool:
    """Stands in for the compile pool: the dry pass the runner runs and what it found."""

    def __init__(self, kernel_files, missing):
        self.kernel_files, self.result, self.calls = kernel_files, missing, []
        self.on_disk, self.missing = [], None

    @contextlib.contextmanager
    def dry_pass(self):
        self.calls.append("dry")
        yield self
        self.on_disk += self.kernel_files  # met on disk

    def compile_pending(self):
        self.calls.append("compile")
        self.missing = self.result

    def close(self):
        self.calls.append("close")


@pytest.fixture
def starts(fake_gpu, monkeypatch, tmp_path, llama_dir, caplog):
    """Engine starts as on CUDA, each with a fake pool; returns (start, pools started)."""
    caplog.set_level("INFO", logger="litevllm")
    kernel = tmp_path / "triton" / "kernel.cubin"
    kernel.parent.mkdir()
    kernel.write_bytes(b"\0")
    monkeypatch.setattr(precompile, "workers_for", lambda device: 4)
    pools, missing = [], []
    monkeypatch.setattr(Precompiler, "start", classmethod(
        lambda cls, device: pools.append(FakePool([str(kernel)], missing[-1])) or pools[-1]))

    def start(found_missing=0):
        missing.append(found_missing)
        return LLM(str(llama_dir), max_num_batched_tokens=256)
    return start, pools


def marker_files(tmp_path):
    return sorted((tmp_path / "cache" / "warm_start").glob("*.json"))


def test_second_start_starts_no_pool_and_runs_no_dry_pass(starts, tmp_path, caplog):
    start, pools = starts
    start(found_missing=2)  # a cold start: kernels were missing, no marker
    assert pools[0].calls == ["dry", "compile", "close"] and marker_files(tmp_path) == []
    start()  # its dry pass found everything on disk: the marker is stored
    assert len(pools) == 2 and pools[1].calls == ["dry", "compile", "close"]
    [marker] = marker_files(tmp_path)
    assert json.loads(marker.read_text())["kernel_files"] == [str(tmp_path / "triton" / "kernel.cubin")]
    caplog.clear()
    llm = start()
    assert len(pools) == 2 and llm.engine.runner.precompiler is None  # no pool, no dry pass
    assert "warm start: the Triton kernels are cached" in caplog.text
    # it generates as a start without the marker
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    prompt = {"prompt_token_ids": [3, 4, 5]}
    cold_tokens = start().generate([prompt], params)[0].outputs[0].token_ids
    assert llm.generate([prompt], params)[0].outputs[0].token_ids == cold_tokens


def test_a_missing_kernel_file_or_corrupt_marker_means_a_normal_start(starts, tmp_path):
    start, pools = starts
    start()
    [marker] = marker_files(tmp_path)
    (tmp_path / "triton" / "kernel.cubin").unlink()  # Triton's cache was cleared
    start()
    assert len(pools) == 2 and pools[1].calls == ["dry", "compile", "close"]
    for junk in ("{not json", '{"key": "other", "kernel_files": []}', "[]"):
        marker.write_text(junk)
        start()
        assert pools[-1].calls == ["dry", "compile", "close"]
        assert json.loads(marker.read_text())["key"] == marker.stem  # stored again, whole
    assert len(pools) == 5


def test_failed_dry_pass_stores_no_marker(starts, tmp_path, monkeypatch):
    start, pools = starts

    def fail(self):
        raise RuntimeError("boom")
    monkeypatch.setattr(FakePool, "compile_pending", fail)
    start()
    assert pools[0].missing is None and marker_files(tmp_path) == []


def test_precompile_off_uses_no_marker(fake_gpu, llama_dir, monkeypatch):
    monkeypatch.setenv("LITEVLLM_PRECOMPILE", "0")
    warm = warm_start.WarmStart(engine_config(llama_dir), llama_dir, torch.device("cuda"))
    assert warm.key is None and not warm.hit and warm.precompiler() is None
    warm = warm_start.WarmStart(engine_config(llama_dir), llama_dir, torch.device("cpu"))
    assert warm.key is None and warm.precompiler() is None


def test_triton_key_is_computed_in_a_thread_and_failures_are_silent(monkeypatch):
    import triton.runtime.cache as cache
    cache.triton_key.cache_clear()
    thread = warm_start.prefetch_triton_key()
    thread.join(60)
    assert thread.daemon and cache.triton_key.cache_info().currsize == 1

    def broken():
        raise OSError("no libtriton")
    uncaught = []
    monkeypatch.setattr(cache, "triton_key", broken)
    monkeypatch.setattr(threading, "excepthook", uncaught.append)
    thread = warm_start.prefetch_triton_key()
    thread.join(60)
    assert not thread.is_alive() and uncaught == []
