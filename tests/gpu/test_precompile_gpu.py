"""Start-up's parallel kernel compile on CUDA, in fresh processes with their own Triton caches:
on a cold cache the pool compiles every variant the dry pass met missing, the warm start finds
none missing (and starts no pool), and the tokens are those of a start without it (LITEVLLM_PRECOMPILE=0).
The pool also builds the kernels' C launchers, so the engine's process builds none."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SCRIPT = """
import json, logging, os, sys
import triton.runtime.build as tb
logging.basicConfig(level=logging.INFO)
built, build = [], tb._build  # C modules built in this process (Triton's launchers)
tb._build = lambda name, *a, **k: built.append(name) or build(name, *a, **k)
from litevllm import LLM, SamplingParams
llm = LLM(sys.argv[1], dtype="bfloat16", max_model_len=256, max_num_seqs=8)
launchers = built.count("__triton_launcher")
cache = os.environ["TRITON_CACHE_DIR"]
entries = lambda: {d: sorted(os.listdir(os.path.join(cache, d))) for d in os.listdir(cache)}
ready = entries()
params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
outs = llm.generate([{"prompt_token_ids": list(range(3, 3 + n))} for n in (5, 37, 90)], params)
outs += llm.generate([{"prompt_token_ids": [3, 4, 5]}], params)  # a short prefill on its own
after = entries()  # what was compiled or built after ready
print(json.dumps([launchers, [o.outputs[0].token_ids for o in outs],
                  [after[d] for d in sorted(set(after) - set(ready))]]))
"""


def start(path, cache, workers):
    env = {**os.environ, "TRITON_CACHE_DIR": str(cache), "LITEVLLM_PRECOMPILE": str(workers)}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = re.findall(r"precompiled (\d+)/(\d+) Triton kernel variants", out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1]), counts


def test_precompiled_start_matches_the_jit_start(llama_dir, tmp_path):
    (launchers, tokens, late), counts = start(llama_dir, tmp_path / "on", 4)
    assert len(counts) == 1 and int(counts[0][0]) == int(counts[0][1]) > 0, counts
    # every kernel variant the requests use, short prefills included, was ready at "ready"
    assert late == [], late
    (_, warm_tokens, _), warm_counts = start(llama_dir, tmp_path / "on", 4)
    assert warm_counts == [] and warm_tokens == tokens  # nothing missing: no pool started
    (off_launchers, off_tokens, _), off_counts = start(llama_dir, tmp_path / "off", 0)
    assert off_counts == [] and off_tokens == tokens
    # a Triton that builds a C launcher per kernel signature (3.6) builds them in the pool
    assert launchers == 0 or off_launchers == 0, (launchers, off_launchers)
