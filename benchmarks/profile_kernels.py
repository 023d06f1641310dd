"""Per-kernel GPU time of decode steps (torch.profiler).

    python benchmarks/profile_kernels.py [CONFIG] [BATCH] [--graphs]

Eager (default): the kernels one decode step launches, each timed alone. ``--graphs`` profiles
the CUDA-graph replays the engine really runs and prints their timeline: GPU busy time, the idle
gaps between kernels (the ramp each launch costs inside a graph) and kernels per decode token.
"""
import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from _timeline import timeline  # benchmarks/ is on sys.path when run as a script
from litevllm import LLM, SamplingParams

ap = argparse.ArgumentParser()
ap.add_argument("config", nargs="?", default="tinyllama-1.1b")
ap.add_argument("batch", nargs="?", type=int, default=1)
ap.add_argument("--graphs", action="store_true")
args = ap.parse_args()
llm = LLM(str(Path(__file__).parent / "configs" / args.config), load_format="dummy",
          max_num_seqs=max(64, args.batch), enforce_eager=not args.graphs)
engine = llm.engine
params = SamplingParams(temperature=0, max_tokens=400, ignore_eos=True)
for i in range(args.batch):  # distinct prompts: identical ones share the prefix cache and, at
    # batch > 1, route every row to the same experts (a MoE step then reads 4 experts, not ~40)
    engine.add_request(f"r{i}", {"prompt_token_ids": [(i * 997 + j) % 30000 + 1 for j in range(128)]},
                       params)
for _ in range(4 if args.graphs else 20):  # graphs: each step() runs several decode steps
    engine.step()
torch.cuda.synchronize()
before = sum(s.num_output_tokens for r in engine.requests.values() for s in r.seqs)
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    with torch.profiler.record_function("decode_steps"):
        for _ in range(2 if args.graphs else 10):
            engine.step()
        torch.cuda.synchronize()
tokens = sum(s.num_output_tokens for r in engine.requests.values() for s in r.seqs) - before
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=60))
steps = max(1, tokens // args.batch)
t = timeline(prof.events(), "decode_steps")
print(f"decode steps {steps} ({tokens} tokens)", "timeline", t,
      {"per_step_us": {k: round(t[k] / steps, 1) for k in ("wall_us", "gpu_busy_us",
                                                           "gpu_idle_between_us")},
       "kernels_per_step": round(t["kernels"] / steps, 1)})
