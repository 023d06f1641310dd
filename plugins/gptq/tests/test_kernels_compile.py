"""Every kernel compiles for a Hopper GPU (sm_90) on this machine, without a GPU: the Triton
interpreter runs Python semantics and misses GPU-compile-only errors (e.g. a constexpr
reassigned inside ``static_range``). Runs in a subprocess without TRITON_INTERPRET (which other
tests set, and which turns kernels into interpreted functions)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("what", ["w4-zero", "w4-perm", "w8", "reduce"])
def test_kernels_compile_for_sm90(what):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(Path(__file__).with_name("compile_sm90.py")), what],
                         capture_output=True, text=True, env=env, timeout=300)
    if run.returncode == 3:
        pytest.skip(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("compiled")


def test_wide_gemv_loop_is_barrier_free():
    """The wide GEMV's K loop, compiled for sm_90, has no barrier, streams 16-byte loads and
    does one FMA per weight; the kernel spills no registers."""
    import json
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(Path(__file__).with_name("compile_sm90.py")),
                          "wide-loop"], capture_output=True, text=True, env=env, timeout=600)
    if run.returncode == 3:
        pytest.skip(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, run.stderr[-3000:]
    loops = [json.loads(ln) for ln in run.stdout.splitlines() if ln.startswith("{")]
    assert len(loops) == 3 * 6  # formats x gemv_wide.SWEEP_TILES
    for loop in loops:
        assert loop["bar"] == 0, loop
        assert not loop["spills"], loop  # 0, or None where nvdisasm is missing
        assert loop["ld_v4"] >= loop["R"], loop  # one 16-byte load per packed row at least
        codes = 4 if loop["fmt"] == "w8" else 8
        per_thread_cols = loop["BN"] // (32 * loop["num_warps"])
        assert loop["fma"] >= loop["R"] * codes * per_thread_cols, loop  # one FMA per weight
