"""Start-up's parallel kernel compile (engine/precompile.py) on the CPU: the pool, the dry pass
and the cache lookup with a real kernel (precompile_scenario.py, in a process of its own), the
switch, and the runner's use of it."""
import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from litevllm import LLM
from litevllm.engine import precompile
from litevllm.engine.precompile import Precompiler, pool_size, prefetch_triton

HERE = Path(__file__).resolve().parent


def test_dry_pass_records_the_pool_compiles_and_the_launch_loads_from_disk(tmp_path):
    cache = tmp_path / "triton"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(cache), PYTHONPATH=os.pathsep.join(
        [str(HERE), *filter(None, [env.get("PYTHONPATH")])]))
    code = "import json, sys, precompile_scenario as s; print(json.dumps(s.main(sys.argv[1])))"
    out = subprocess.run([sys.executable, "-c", code, str(cache)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    # the dry pass launches nothing and compiles nothing here: it records two variants
    assert seen["dry_returns"] == [True, True, True] and seen["run_restored"]
    assert seen["files_after_dry"] == 0 and seen["in_memory_after_dry"] == 0
    assert seen["recorded"] == [["precompile_scenario:scale_kernel", 2],
                                ["precompile_scenario:scale_kernel", 3]] and seen["met"] == 2
    # the pool compiles both (a variant it cannot import is left to the JIT) into the cache
    # the launch looks in: a warm start loads them, records nothing and compiles nothing
    assert seen["compiled"] == 2 and seen["on_disk"] == [True, True]
    assert seen["warm_returns"] == [True, True] and seen["recorded_warm"] == 0
    assert seen["in_memory_warm"] == 2 and seen["unchanged_files"]


def test_pool_size_follows_the_switch(monkeypatch):
    monkeypatch.setenv("LITEVLLM_PRECOMPILE", "0")
    assert pool_size() == 0 and Precompiler.start(torch.device("cuda")) is None
    monkeypatch.setenv("LITEVLLM_PRECOMPILE", "3")
    assert pool_size() == 3
    monkeypatch.delenv("LITEVLLM_PRECOMPILE")
    assert 0 <= pool_size() <= precompile.MAX_WORKERS
    assert Precompiler.start(torch.device("cpu")) is None  # only CUDA start-ups compile ahead


class _Recorder:
    """Stands in for the pool: what the runner asks of it, in order."""

    def __init__(self):
        self.calls, self.inside = [], False

    @contextlib.contextmanager
    def dry_pass(self):
        self.calls.append("dry")
        self.inside = True
        yield self
        self.inside = False

    def compile_pending(self):
        self.calls.append("compile")

    def close(self):
        self.calls.append("close")


def test_runner_compiles_ahead_once_and_survives_a_failing_dry_pass(llama_dir, caplog):
    runner = LLM(str(llama_dir), max_num_batched_tokens=256).engine.runner
    runner.precompiler = rec = _Recorder()
    seen = []
    runner._compile_ahead(lambda: seen.append(rec.inside))
    runner._compile_ahead(lambda: seen.append("again"))  # used once
    assert seen == [True] and rec.calls == ["dry", "compile", "close"]

    def fail():
        raise RuntimeError("boom")
    runner.precompiler = rec = _Recorder()
    runner._compile_ahead(fail)
    assert rec.calls == ["dry", "close"]  # nothing compiled ahead: the JIT compiles as before
    assert "kernel precompile skipped (RuntimeError: boom)" in caplog.text


def test_triton_key_and_cuda_utils_are_prefetched_in_threads_failures_silent(monkeypatch):
    import triton.runtime.cache as cache
    cache.triton_key.cache_clear()
    built = []
    monkeypatch.setattr(precompile, "build_cuda_utils", lambda: built.append(1))
    threads = prefetch_triton()
    for thread in threads:
        thread.join(60)
    assert all(t.daemon for t in threads) and cache.triton_key.cache_info().currsize == 1
    assert built == [1]

    def broken():
        raise OSError("no libtriton")
    uncaught = []
    monkeypatch.setattr(cache, "triton_key", broken)
    monkeypatch.setattr(precompile, "build_cuda_utils", broken)
    monkeypatch.setattr(threading, "excepthook", uncaught.append)
    threads = prefetch_triton()
    for thread in threads:
        thread.join(60)
    assert len(threads) == 2 and not any(t.is_alive() for t in threads) and uncaught == []


def test_the_dry_pass_waits_for_the_prefetch_threads(monkeypatch):
    import time
    done = []
    monkeypatch.setattr(precompile, "build_cuda_utils",
                        lambda: time.sleep(0.3) or done.append("cuda_utils"))
    prefetch_triton()
    with Precompiler(1, eager=False).dry_pass():  # no pool: none is needed for the pass
        assert done == ["cuda_utils"]


class _FakePool:
    """Stands in for ProcessPoolExecutor: records that it was made and runs tasks inline."""
    made = 0

    def __init__(self, *args, **kwargs):
        _FakePool.made += 1

    def submit(self, fn, *args):
        from concurrent.futures import Future
        f = Future()
        f.set_result(None)
        return f

    def shutdown(self, **kwargs):
        pass


def test_pool_starts_with_the_engine_only_on_an_empty_cache(monkeypatch, tmp_path, caplog):
    caplog.set_level("INFO", logger="litevllm")
    monkeypatch.setattr(precompile, "ProcessPoolExecutor", _FakePool)
    monkeypatch.setenv("LITEVLLM_PRECOMPILE", "2")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))
    from triton import knobs
    monkeypatch.setattr(knobs.cache, "dir", str(tmp_path / "cache"))
    _FakePool.made = 0
    assert precompile.triton_cache_is_empty()
    Precompiler.start(torch.device("cuda")).close()  # a first start: the pool starts now
    assert _FakePool.made == 1
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "entry").mkdir()
    assert not precompile.triton_cache_is_empty()
    pc = Precompiler.start(torch.device("cuda"))  # a warm cache: no pool yet
    assert _FakePool.made == 1 and pc.pool is None
    assert pc.compile_pending() == 0 and pc.pool is None  # nothing missing: none at all
    assert "no pool started" in caplog.text
    pc.pending[("k", "1")] = object()  # a kernel the dry pass found missing: the pool starts
    monkeypatch.setattr(precompile, "compile_variant", lambda v: "k")
    assert pc.compile_pending() == 1 and _FakePool.made == 2
    pc.close()
    # the engine asks before its prefetch thread writes the cache: that answer decides
    Precompiler.start(torch.device("cuda"), cold=True).close()
    assert _FakePool.made == 3


def test_the_pool_builds_a_launcher_only_where_triton_builds_one_per_signature(monkeypatch):
    import types

    import triton.backends.nvidia as nvidia
    made = []
    fake = types.SimpleNamespace(CudaLauncher=lambda src, meta: made.append((src, meta)))
    monkeypatch.setattr(nvidia, "driver", fake)  # a Triton with a generic launcher (3.9)

    def kernel(backend):
        target = types.SimpleNamespace(backend=backend)
        return types.SimpleNamespace(src="src", metadata=types.SimpleNamespace(target=target))
    precompile.build_launcher(kernel("cuda"))
    assert made == []
    fake.make_launcher = object()  # Triton 3.6: one C launcher per kernel signature
    precompile.build_launcher(kernel("hip"))
    assert made == []
    k = kernel("cuda")
    precompile.build_launcher(k)
    assert made == [("src", k.metadata)]


def test_compile_ahead_dry_runs_each_launch_and_skips_failures(monkeypatch):
    ran, pending = [], []
    pc = Precompiler(1, eager=False)
    monkeypatch.setattr(Precompiler, "compile_pending", lambda self: pending.append(1) or 3)

    def broken():
        raise ValueError("no such tile")
    launches = [lambda: ran.append("a"), broken, lambda: ran.append("b")]
    assert pc.compile_ahead(launches) == 3
    assert ran == ["a", "b"] and pending == [1]


def test_a_sweep_pool_starts_at_once_or_not_at_all(monkeypatch):
    monkeypatch.setattr(precompile, "ProcessPoolExecutor", _FakePool)
    _FakePool.made = 0
    monkeypatch.setenv("LITEVLLM_PRECOMPILE", "0")
    assert Precompiler.for_sweep() is None and _FakePool.made == 0
    monkeypatch.setenv("LITEVLLM_PRECOMPILE", "2")
    pc = Precompiler.for_sweep()
    assert pc.workers == 2 and pc.pool is not None and _FakePool.made == 1
    pc.close()


def test_the_start_up_dry_pass_also_runs_short_prefills(llama_dir, monkeypatch):
    """Short single-sequence prefills join the profiling prefill in the dry pass, so kernels
    whose tiles follow the query length compile ahead too; each is a working forward."""
    from litevllm.engine.model_runner import SHORT_PREFILLS
    runner = LLM(str(llama_dir), max_num_batched_tokens=256).engine.runner
    met = []

    class Stop(Exception):
        pass

    def compile_ahead(*forwards):
        met.extend(forwards)
        raise Stop  # before the CUDA-only memory statistics
    monkeypatch.setattr(runner, "_compile_ahead", compile_ahead)
    with pytest.raises(Stop):
        runner.profile_peak_memory(256)
    seq_len = min(256, runner.max_model_len)
    assert len(met) == 1 + sum(n < seq_len for n in SHORT_PREFILLS) > 2
    with torch.inference_mode():  # as in profile_peak_memory
        for forward in met[1:]:
            forward()  # the torch path runs each one
