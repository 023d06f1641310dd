"""CUDA graphs for prefill steps in one engine (TinyLlama, dummy weights): prefill time to first
token at several prompt lengths with whole-step graphs (the Triton backend's default), piecewise
graphs (attention eager between them) and none; then batch-1 n-gram verify steps with an oracle
proposer.

    python benchmarks/bench_piecewise.py [config dir] > $OUT/piecewise.txt

The modes swap the runner's graph object, so they share weights, KV cache and kernels.
"""
import statistics
import sys
import time
from pathlib import Path

import torch

from litevllm import LLM, SamplingParams
from litevllm.engine.piecewise import PiecewiseGraphs

cfg = Path(__file__).parent / "configs" / (sys.argv[1] if len(sys.argv) > 1 else "tinyllama-1.1b")
K = 4
t0 = time.perf_counter()
llm = LLM(str(cfg), load_format="dummy", max_model_len=2048 + 64, gpu_memory_utilization=0.5,
          max_piecewise_graph_tokens=2048,
          speculative_config={"method": "ngram", "num_speculative_tokens": K,
                              "min_acceptance_rate": 0.01})
engine, runner = llm.engine, llm.engine.runner
pw = runner.piecewise
print(f"start-up to ready: {time.perf_counter() - t0:.2f} s (decode graphs "
      f"{runner.capture_seconds:.2f} s, prefill-step graphs {pw.capture_seconds:.2f} s for "
      f"{len(pw.pieces)} of {len(pw.buckets)} buckets)", flush=True)
proposer = engine.spec.proposer
pieces = PiecewiseGraphs(runner.model, runner.attn, runner.device, 2048)  # no metadata buffers
pieces.capture(runner.kv_caches, runner._graph_meta(1), budget_s=60)
MODES = {"whole": pw, "pieces": pieces, "eager": None}
assert pw.whole and not pieces.whole


def timed(prompt, max_tokens):
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    torch.cuda.synchronize()
    t = time.perf_counter()
    llm.generate({"prompt_token_ids": prompt}, params, use_tqdm=False)
    torch.cuda.synchronize()
    return time.perf_counter() - t


def mode(name):
    runner.piecewise = MODES[name]


proposer.propose = lambda tokens, k: []   # no drafts while timing prefills
for n in (16, 128, 512, 1024, 2048):
    rows = {m: [] for m in MODES}
    for i in range(8):
        for k, m in enumerate(MODES):
            mode(m)
            prompt = [(i * 7919 + j * 31 + n + k) % 31000 + 100 for j in range(n)]  # uncached
            rows[m].append(timed(prompt, 1) * 1e3)
    med = {m: statistics.median(rows[m][2:]) for m in MODES}
    print(f"prefill {n:5d} tokens, TTFT median ms: " + "  ".join(
        f"{m} {t:7.2f}" for m, t in med.items()) + f"  (eager / whole {med['eager'] / med['whole']:.2f}x)",
        flush=True)
print(f"whole-step buckets captured: {sorted(pw.pieces)} in {pw.capture_seconds:.2f} s total"
      f" (turned off: {pw.disabled})",
      flush=True)

# batch-1 decoding, 256 tokens: drafts from the plain greedy continuation (100% acceptance)
prompt = [(j * 131) % 31000 + 100 for j in range(128)]
mode("eager")
proposer.propose = lambda tokens, k: []
ref = llm.generate({"prompt_token_ids": prompt}, SamplingParams(temperature=0, max_tokens=256,
                   ignore_eos=True), use_tqdm=False)[0].outputs[0].token_ids
oracle = prompt + ref
plain = min(timed(prompt, 256) for _ in range(3))
proposer.propose = lambda tokens, k: oracle[len(tokens):len(tokens) + k]
for m in MODES:
    mode(m)
    engine.spec.paused = 0
    t = min(timed(prompt, 256) for _ in range(3))
    print(f"batch-1, 256 tokens, k={K} oracle drafts, graphs {m:6s}: "
          f"{256 / t:7.0f} tok/s ({plain / t:.2f}x plain decode at {256 / plain:.0f} tok/s)",
          flush=True)
