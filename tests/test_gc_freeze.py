"""An engine start moves the objects alive before it (imported modules) out of the cyclic
collector's scans, once per process; the engine's own objects stay collectable."""
import subprocess
import sys

SCRIPT = """
import gc, sys, weakref
calls, real_freeze = [], gc.freeze
gc.freeze = lambda: (calls.append(1), real_freeze())[1]
from litevllm import LLM
assert gc.get_freeze_count() == 0
llm = LLM(sys.argv[1], load_format="dummy", max_model_len=64)
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
