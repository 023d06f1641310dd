"""The parallel kernel compile (engine/precompile.py) on a CPU, run by test_precompile.py in a
process of its own: Triton must import in JIT mode here, while the test process's Triton is in
interpreter mode. Triton compiles for a Hopper target without a GPU, so a stand-in driver lets
a real kernel go through the dry pass, the pool and the cache lookup of the launch after it.
``main`` returns what it observed."""
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

from litevllm.engine.precompile import Precompiler, Variant, cached_on_disk


@triton.jit
def scale_kernel(x_ptr, out_ptr, n, FACTOR: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * FACTOR, mask=offs < n)


class Sm90Driver:
    """What a warm-up launch asks of the driver, for a Hopper GPU that is not there."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_active_torch_device(self):
        return torch.device("cpu")


def launch(factor: int):
    x = torch.ones(100, dtype=torch.float16)
    return scale_kernel[(2,)](x, torch.empty_like(x), 100, FACTOR=factor, BLOCK=64)


def files(cache: Path) -> list:
    return sorted(str(p) for p in cache.rglob("*") if p.is_file())


def main(cache) -> dict:
    cache = Path(cache)
    driver.set_active(Sm90Driver())
    seen = {}
    pc = Precompiler(2)
    try:
        with pc.dry_pass():
            seen["dry_returns"] = [launch(2) is None, launch(3) is None, launch(2) is None]
        seen["run_restored"] = JITFunction.run.__name__ == "run"
        seen["files_after_dry"] = len(files(cache))
        seen["in_memory_after_dry"] = len(scale_kernel.device_caches[0][0])
        variants = sorted(pc.pending.values(), key=lambda v: v.constexprs[(3,)])
        seen["recorded"] = [[v.name, v.constexprs[(3,)]] for v in variants]
        seen["met"] = pc.seen
        bad = Variant("no_such_module", "kernel", variants[0].signature, variants[0].constexprs,
                      variants[0].attrs, variants[0].options, variants[0].target)
        pc.pending[("bad",)] = bad
        seen["compiled"] = pc.compile_pending()
        seen["on_disk"] = [cached_on_disk(v) for v in variants]
        written = files(cache)
        with pc.dry_pass():  # a warm start: both load from disk, nothing is recorded
            seen["warm_returns"] = [launch(2) is not None, launch(3) is not None]
        seen["recorded_warm"] = len(pc.pending)
        seen["in_memory_warm"] = len(scale_kernel.device_caches[0][0])
        seen["unchanged_files"] = files(cache) == written
    finally:
        pc.close()
    return seen
