"""An engine start moves the objects alive before it (imported modules) out of the cyclic
collector's scans, once per process; the engine's own objects stay collectable. Automatic
collections pause while the engine module imports and while an engine is built, and resume
after (also when the build fails)."""
import gc
import subprocess
import sys

import pytest

from litevllm.engine.collector import paused

SCRIPT = """
import gc, sys, weakref
calls, real_freeze = [], gc.freeze
gc.freeze = lambda: (calls.append(1), real_freeze())[1]
from litevllm import LLM
assert gc.get_freeze_count() == 0 and gc.isenabled()
try:
    LLM(sys.argv[1] + "-missing")
except FileNotFoundError:
    pass
assert gc.isenabled()
llm = LLM(sys.argv[1], load_format="dummy", max_model_len=64)
assert gc.isenabled()
frozen = gc.get_freeze_count()
assert frozen > 10_000, frozen          # torch, transformers, ...
ref = weakref.ref(llm.engine)
del llm
gc.collect()
assert ref() is None                     # the engine (in cycles) is not frozen
LLM(sys.argv[1], load_format="dummy", max_model_len=64)
assert calls == [1]                      # once per process
"""


def test_engine_start_freezes_imports_once(llama_dir):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(llama_dir)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_paused_restores_the_collector_state():
    assert gc.isenabled()
    with pytest.raises(RuntimeError), paused():
        assert not gc.isenabled()
        raise RuntimeError("build failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with paused():
            pass
        assert not gc.isenabled()  # a caller's disabled collector stays disabled
    finally:
        gc.enable()
