"""Start-up's parallel kernel compile (engine/precompile.py), on the CPU: Triton compiles for an
H100/H200 target without a GPU, so a stand-in driver lets a real kernel go through the dry pass,
the pool and the cache lookup of the launch that follows."""
import contextlib
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

from litevllm import LLM
from litevllm.engine import precompile
from litevllm.engine.precompile import Precompiler, Variant, cached_on_disk, pool_size


@triton.jit
def _scale_kernel(x_ptr, out_ptr, n, FACTOR: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * FACTOR, mask=offs < n)


class _Sm90Driver:
    """What a warm-up launch asks of the driver, for a Hopper GPU that is not there."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_active_torch_device(self):
        return torch.device("cpu")


@pytest.fixture
def sm90(tmp_path, monkeypatch):
    if not isinstance(_scale_kernel, JITFunction):
        pytest.skip("TRITON_INTERPRET=1 in this process: kernels are interpreted")
    cache = tmp_path / "triton"
    # before the pool starts: its processes inherit the environment (the Triton plugin's tests
    # set TRITON_INTERPRET=1 when collected in the same run)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(cache))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(driver, "_active", _Sm90Driver())  # restored as it was (maybe unset)
    _scale_kernel.device_caches.clear()
    yield cache
    _scale_kernel.device_caches.clear()


def _launch(factor: int, block: int = 64):
    x = torch.ones(100, dtype=torch.float16)
    return _scale_kernel[(2,)](x, torch.empty_like(x), 100, FACTOR=factor, BLOCK=block)


def _files(cache: Path) -> set:
    return {p for p in cache.rglob("*") if p.is_file()} if cache.exists() else set()


def test_dry_pass_records_the_pool_compiles_and_the_launch_loads_from_disk(sm90):
    pc = Precompiler(2)
    try:
        with pc.dry_pass():
            assert _launch(2) is None and _launch(3) is None and _launch(2) is None
        assert JITFunction.run.__name__ == "run"  # restored
        assert not _files(sm90) and not _scale_kernel.device_caches[0][0]  # nothing compiled here
        variants = sorted(pc.pending.values(), key=lambda v: v.constexprs[(3,)])
        assert [(v.qualname, v.constexprs[(3,)]) for v in variants] == [
            ("_scale_kernel", 2), ("_scale_kernel", 3)]
        assert pc.compile_pending() == 2 and not pc.pending
        assert all(cached_on_disk(v) for v in variants), sorted(p.parent.name for p in _files(sm90))
        written = _files(sm90)
        # a second dry pass (a warm start) loads both variants from disk and records nothing
        with pc.dry_pass():
            assert _launch(2) is not None and _launch(3) is not None
        assert not pc.pending and len(_scale_kernel.device_caches[0][0]) == 2
        assert _files(sm90) == written  # cache hits: nothing compiled again
    finally:
        pc.close()


def test_a_variant_the_pool_cannot_compile_is_left_to_the_jit(sm90):
    pc = Precompiler(1)
    try:
        with pc.dry_pass():
            _launch(5)
        (good,) = pc.pending.values()
        bad = Variant("no_such_module", "kernel", good.signature, good.constexprs, good.attrs,
                      good.options, good.target)
        pc.pending[("bad",)] = bad
        assert pc.compile_pending() == 1 and cached_on_disk(good)
    finally:
        pc.close()


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
