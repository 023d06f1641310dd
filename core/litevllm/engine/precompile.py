"""Start-up compiles the Triton kernels it will need in parallel processes, before running them.

A dry pass runs the forwards start-up is about to run (the memory-profiling prefill, one decode
per CUDA-graph bucket) with every Triton launch made a warm-up: a kernel variant found in
Triton's on-disk cache loads, any other is recorded instead of compiled, and nothing launches.
The recorded variants then compile in a pool of spawned processes (Triton compiles under the
GIL, so threads would not help) into the shared cache, where the real passes find them; the
pool also builds each variant's C launcher, which Triton 3.6 otherwise builds with the system
compiler at the first launch (H200, TinyLlama, cold cache: 11.2 -> 8.4 s to ready). A
variant that cannot be described, sent or compiled is left to Triton's usual JIT on first use.

``LITEVLLM_PRECOMPILE=0`` turns this off, ``=N`` uses N processes (default: the CPUs less one,
at most 16). With an empty Triton cache (a first start) the pool starts with the engine, so that
its processes import while the config and model load. Otherwise it starts only if the dry pass
finds kernels missing: on the H200 a pool importing beside a warm start slowed it by 0.6-1.3 s
(TinyLlama: 5.48/5.83 s against 4.20/4.94 s without it; RESULTS, seventh session). The dry pass
patches Triton's ``JITFunction`` for its duration: launches from other threads in that window
are warm-ups too.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import multiprocessing
import os
import pickle
import sys
import threading
import time
import types
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass

log = logging.getLogger("litevllm")

MAX_WORKERS = 16
TIMEOUT_S = 600.0  # a stuck pool only costs this: the real pass then compiles what is missing


_prefetching: list[threading.Thread] = []  # joined before the dry pass's first lookup


def prefetch_triton() -> list[threading.Thread]:
    """Two daemon threads, run while the config and model load: one hashes Triton's own files
    for ``triton_key()`` (lru-cached, ~0.25 s, needed by the first kernel lookup; hashlib
    releases the GIL on large buffers), the other has Triton's CUDA utility module built into
    its cache (:func:`build_cuda_utils`, a compiler subprocess). Failures are silent: the first
    kernel lookup then does both."""
    try:
        from triton.runtime.cache import triton_key  # imported here: the thread only hashes
    except Exception:
        return []

    def quietly(fn):
        def run():
            try:
                fn()
            except Exception:
                pass
        return run
    threads = [threading.Thread(target=quietly(fn), name=f"litevllm-{name}", daemon=True)
               for name, fn in (("triton-key", triton_key), ("cuda-utils", build_cuda_utils))]
    for thread in threads:
        thread.start()
    _prefetching[:] = threads
    return threads


def join_prefetch(timeout: float = 5.0) -> None:
    """Wait (at most ``timeout`` s) for :func:`prefetch_triton`'s threads: a first lookup
    that ran beside them would build the same module again."""
    deadline = time.perf_counter() + timeout
    for thread in _prefetching:
        thread.join(max(0.0, deadline - time.perf_counter()))


def triton_cache_is_empty() -> bool:
    """Whether Triton's on-disk kernel cache (its ``knobs.cache.dir``) holds nothing yet: a
    fresh machine or cache dir. True when that cannot be told (the pool then starts early)."""
    try:
        from triton import knobs
        with os.scandir(knobs.cache.dir) as entries:
            return next(entries, None) is None
    except Exception:  # missing or unreadable dir, or a Triton without knobs
        return True


def pool_size() -> int:
    """Worker processes from ``LITEVLLM_PRECOMPILE`` (0: off) or the CPUs this process may use."""
    value = os.environ.get("LITEVLLM_PRECOMPILE", "").strip()
    if value.isdigit():
        return int(value)
    if os.environ.get("TRITON_INTERPRET") == "1":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(MAX_WORKERS, (cpus or 1) - 1))


@dataclass(frozen=True)
class Variant:
    """One kernel specialisation, as ``triton.compile`` takes it; picklable."""
    module: str
    qualname: str
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict
    target: object  # triton's GPUTarget

    @property
    def name(self) -> str:
        return f"{self.module}:{self.qualname}"


def jit_function(module: str, qualname: str):
    """The ``JITFunction`` defined at ``module:qualname`` (through autotuner/heuristics wrappers)."""
    from triton.runtime.jit import JITFunction
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    while not isinstance(obj, JITFunction) and hasattr(obj, "fn"):
        obj = obj.fn
    if not isinstance(obj, JITFunction):
        raise TypeError(f"{module}:{qualname} is not a Triton JIT function")
    return obj


def build_cuda_utils() -> None:
    """Triton's CUDA driver needs a small C module, built by the system C compiler into Triton's
    cache on the first start (~1 s, in a subprocess): build it now if Triton has one."""
    try:
        from triton.backends.nvidia.driver import CudaUtils
    except ImportError:  # no CUDA backend in this Triton
        return
    CudaUtils()


def build_launcher(kernel) -> None:
    """Triton 3.6 builds each kernel signature's C launcher with the system C compiler at the
    kernel's first launch (~0.35 s each on the H200 host, one after another in the engine's process). Built here,
    in a pool process, it lands in the shared cache instead. Triton versions that launch through
    one generic launcher (no ``make_launcher``) and other backends have nothing to build."""
    if kernel.metadata.target.backend != "cuda":
        return
    try:
        from triton.backends.nvidia import driver
    except ImportError:
        return
    if hasattr(driver, "make_launcher"):
        driver.CudaLauncher(kernel.src, kernel.metadata)


def compile_variant(variant: Variant) -> str:
    """Compile ``variant`` and its launcher into Triton's cache (runs in a pool process; needs
    no GPU)."""
    from triton.compiler.compiler import ASTSource, compile
    fn = jit_function(variant.module, variant.qualname)
    src = ASTSource(fn, variant.signature, variant.constexprs, variant.attrs)
    kernel = compile(src, target=variant.target, options=variant.options)
    try:
        build_launcher(kernel)
    except Exception as e:  # the kernel's first launch builds it then
        log.debug("precompile: %s's launcher not built (%s)", variant.name, e)
    return variant.name


def _warm_up() -> None:
    """First task of each process: the imports every compile needs, ahead of time."""
    import torch  # noqa: F401  (the kernel modules import it)
    import triton.compiler.compiler  # noqa: F401


def cached_on_disk(variant: Variant) -> bool:
    """Whether Triton's cache holds ``variant`` (the lookup ``triton.compile`` makes)."""
    from triton.compiler.compiler import (ASTSource, get_cache_invalidating_env_vars,
                                          get_cache_key, get_cache_manager, make_backend)
    fn = jit_function(variant.module, variant.qualname)
    src = ASTSource(fn, variant.signature, variant.constexprs, variant.attrs)
    backend = make_backend(variant.target)
    options = backend.parse_options(dict(variant.options, **src.parse_options()))
    key = get_cache_key(src, backend, options, env_vars=get_cache_invalidating_env_vars())
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return get_cache_manager(digest).get_group(f"{src.name[:150]}.json") is not None


@contextlib.contextmanager
def _main_script_hidden():
    """Spawned processes import the parent's ``__main__`` script (one without an ``if __name__
    == "__main__"`` guard would build an engine in each): hide it while they start."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class Precompiler:
    """A pool of compile processes, a dry pass that fills it, and a wait for the results."""

    def __init__(self, workers: int, eager: bool = True):
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None
        if eager:
            self._start_pool()
        self.pending: dict[tuple, Variant] = {}
        self.seen = 0  # distinct variants the dry pass met that were not in memory yet

    def _start_pool(self) -> None:
        self.pool = ProcessPoolExecutor(self.workers,
                                        mp_context=multiprocessing.get_context("spawn"))
        with _main_script_hidden():  # each submit starts one process while some are missing
            self._warm = [self.pool.submit(_warm_up) for _ in range(self.workers)]

    @classmethod
    def start(cls, device, cold: bool | None = None) -> Precompiler | None:
        """A precompiler for a CUDA ``device`` (its pool started now only if Triton's cache is
        empty, or ``cold``: asked before :func:`prefetch_triton` writes there), or None (off,
        or not possible here)."""
        workers = pool_size()
        if device.type != "cuda" or workers < 1:
            return None
        try:
            return cls(workers, eager=triton_cache_is_empty() if cold is None else cold)
        except Exception as e:  # no processes here: Triton's JIT compiles as it always did
            log.warning("kernel precompile off: cannot start its processes (%s)", e)
            return None

    @classmethod
    def for_sweep(cls) -> Precompiler | None:
        """A precompiler with its pool started now, for a tuning sweep's
        :meth:`compile_ahead`, or None where ``LITEVLLM_PRECOMPILE=0``."""
        workers = pool_size()
        return cls(workers) if workers > 0 else None

    def describe(self, fn, device, signature, constexprs, options, attrs) -> Variant | None:
        """The variant a launch would compile, or None when it is on disk already."""
        target = fn.device_caches[device][2]
        variant = Variant(fn.fn.__module__, fn.fn.__qualname__, signature, constexprs, attrs,
                          dict(options.__dict__), target)
        if cached_on_disk(variant):
            return None
        pickle.dumps(variant)  # fails here, not in the pool, for values that cannot travel
        return variant

    @contextlib.contextmanager
    def dry_pass(self):
        """Inside, Triton launches are warm-ups: cached kernels load, missing ones are recorded."""
        from triton.runtime.jit import JITFunction
        join_prefetch()
        run, do_compile = JITFunction.run, JITFunction._do_compile

        def warm_run(fn, *args, grid, warmup, **kwargs):
            return run(fn, *args, grid=grid, warmup=True, **kwargs)

        def record(fn, key, signature, device, constexprs, options, attrs, warmup):
            name = (f"{fn.fn.__module__}:{fn.fn.__qualname__}", str(key))
            if name in self.pending:  # met again (every layer): recorded once
                return None
            self.seen += 1
            try:
                variant = self.describe(fn, device, signature, constexprs, options, attrs)
            except Exception as e:
                log.debug("precompile: %s compiles in-process (%s)", fn, e)
                variant = None
            if variant is None:
                return do_compile(fn, key, signature, device, constexprs, options, attrs, warmup)
            self.pending[name] = variant
            return None

        JITFunction.run, JITFunction._do_compile = warm_run, record
        try:
            yield self
        finally:
            JITFunction.run, JITFunction._do_compile = run, do_compile

    def compile_ahead(self, launches) -> int:
        """Dry-run every callable of ``launches`` (one that raises is skipped: its real run
        reports the error), then compile the kernels they met in the pool (tuning sweeps)."""
        with self.dry_pass():
            for launch in launches:
                try:
                    launch()
                except Exception as e:
                    log.debug("precompile: a dry launch failed (%s)", e)
        return self.compile_pending()

    def compile_pending(self, timeout: float = TIMEOUT_S) -> int:
        """Compile the recorded variants in the pool; returns how many compiled."""
        t0 = time.perf_counter()
        variants, self.pending = list(self.pending.values()), {}
        if not variants:  # a warm cache: no pool needed
            log.info("precompile: all %d Triton kernel variants met were cached%s", self.seen,
                     "" if self.pool else "; no pool started")
            return 0
        if self.pool is None:
            self._start_pool()
        futures = [self.pool.submit(compile_variant, v) for v in variants]
        done, _ = wait(futures, timeout=timeout)
        ok = sum(1 for f in done if f.exception() is None)
        for f, v in zip(futures, variants):
            if f in done and f.exception() is not None:
                log.debug("precompile: %s failed in the pool (%s)", v.name, f.exception())
        log.info("precompiled %d/%d Triton kernel variants (%d met) in %.1f s on %d processes",
                 ok, len(variants), self.seen, time.perf_counter() - t0, self.workers)
        return ok

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
