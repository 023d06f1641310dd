"""Where the time of the throughput workload goes (issue 16): one timed run of
`measure_throughput` (256 prompts, lengths U[100,1024]) with the engine steps timed on the
host by kind, then the same workload under the CUDA-only profiler for GPU busy time by kernel
family.

    python benchmarks/profile_throughput.py [--model benchmarks/configs/tinyllama-1.1b]
        [--num-prompts 256] [--engine JSON] [--json-out FILE]

Step kinds: ``decode`` (only decodes running: one or several steps per host sync) and
``mixed`` (a prompt still waiting or in prefill). Host-timed steps include the wait for the
GPU, so their sum is the wall time; GPU busy / wall says how far the run is from GPU-bound.
The host-timed steps also count the benchmark's untimed warm-up (20 tokens per prompt); the
profiled run has none (the first run compiled everything).
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import time

import torch

from litevllm import LLM
from litevllm.bench import measure_throughput

FAMILIES = [("attention", r"attention|_fwd|decode_split|decode_merge|prefill"),
            ("gemm", r"gemm|gemv|cutlass|sm90_xmma|nvjet|cublas|matmul"),
            ("norm", r"rms_norm|layer_norm"), ("act", r"act_and_mul|silu|gelu"),
            ("rotary", r"rotary"), ("kv_write", r"reshape_and_cache|cache"),
            ("sampling", r"argmax|softmax|uniform|gumbel|sort|topk|log"),
            ("copy", r"copy|memcpy|memset|fill|index|gather|cat")]


def family(name: str) -> str:
    low = name.lower()
    return next((f for f, pat in FAMILIES if re.search(pat, low)), "other")


def timed_steps(engine, record):
    step = engine.step

    def wrapped(*a, **k):
        kind = "idle"
        sched = engine.scheduler
        if sched.running or sched.waiting:
            kind = "mixed" if sched.waiting or any(not s.is_decode for s in sched.running) \
                else "decode"
        t = time.perf_counter()
        out = step(*a, **k)
        record[kind][0] += time.perf_counter() - t
        record[kind][1] += 1
        return out
    engine.step = wrapped
    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="benchmarks/configs/tinyllama-1.1b")
    p.add_argument("--num-prompts", type=int, default=256)
    p.add_argument("--engine", default='{"max_model_len": 4096}')
    p.add_argument("--json-out")
    a = p.parse_args()
    llm = LLM(a.model, load_format="dummy", **json.loads(a.engine))
    engine = llm.engine
    steps = collections.defaultdict(lambda: [0.0, 0])
    original = timed_steps(engine, steps)
    r = measure_throughput(llm, a.num_prompts, None, None, 100, 1024)
    engine.step = original
    report = {"throughput": {k: r[k] for k in ("output_tok_per_s", "elapsed_s") if k in r},
              "host_timed_steps": {k: {"s": round(v[0], 4), "steps": v[1]}
                                   for k, v in steps.items()}}
    if torch.cuda.is_available():
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            t = time.perf_counter()
            measure_throughput(llm, a.num_prompts, None, None, 100, 1024, seed=1, warmup=False)
            wall = time.perf_counter() - t
        by_family, by_name = collections.Counter(), collections.Counter()
        spans = []
        for e in prof.events():
            if e.device_type.name == "CUDA" and e.time_range.elapsed_us() > 0:
                us = e.time_range.elapsed_us()
                by_family[family(e.name)] += us
                by_name[e.name[:80]] += us
                spans.append((e.time_range.start, e.time_range.end))
        spans.sort()
        busy, end = 0.0, float("-inf")
        for s, e in spans:  # union of kernel intervals
            if e > end:
                busy += e - max(s, end)
                end = e
        report["gpu"] = {"wall_s_incl_warmup": round(wall, 3), "busy_s": round(busy / 1e6, 3),
                         "by_family_s": {k: round(v / 1e6, 3) for k, v in by_family.most_common()},
                         "top_kernels_s": {k: round(v / 1e6, 4) for k, v in by_name.most_common(15)}}
    print(json.dumps(report, indent=1))
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
