"""Wall time and per-kernel GPU time of one prefill step (default TinyLlama, 2048 tokens).

    python benchmarks/profile_prefill.py [CONFIG] [TOKENS] [--reps N] [--sleep S] [--trace FILE]
                                         [--cprofile]

``--sleep`` waits after start-up before timing (background work of the start-up settles);
``--trace`` writes the profiled prefill's Chrome trace (host ops and kernels on one timeline).
The last line splits the profiled prefill's wall time: host time before the first kernel, GPU
busy time, GPU idle gaps between kernels (the largest listed), host time after the last kernel.
The profiler records every host op, so its host times are inflated: read the gaps as where the
host is the bottleneck, not as its unprofiled cost. The ``events`` line is the unprofiled split
(CUDA events, median of the timed runs): host time before ``execute`` (scheduling, then the
step's inputs: ``host_schedule`` + ``host_prepare``),
host time launching the forward and the logits, GPU time from the first launch to the logits
(compare with the profile's kernel total: the difference is the GPU waiting for the host),
and the rest of the wall (sampling, outputs).
"""
import argparse
import cProfile
import pstats
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from _timeline import timeline  # benchmarks/ is on sys.path when run as a script
from litevllm import LLM, SamplingParams

ap = argparse.ArgumentParser()
ap.add_argument("config", nargs="?", default="tinyllama-1.1b")
ap.add_argument("tokens", nargs="?", type=int, default=2048)
ap.add_argument("--reps", type=int, default=6)
ap.add_argument("--sleep", type=float, default=0.0)
ap.add_argument("--trace")
ap.add_argument("--cprofile", action="store_true",
                help="cProfile the host work before execute (schedule, prepare) of the timed runs")
args = ap.parse_args()
n = args.tokens
llm = LLM(str(Path(__file__).parent / "configs" / args.config), load_format="dummy",
          max_num_seqs=64, max_model_len=n + 64)
engine = llm.engine
params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)


marks: dict = {}  # the first execute() of a prefill: host times and CUDA events
_execute = engine.runner.execute


def execute(inputs):
    first = "enter" not in marks
    if first:
        marks["enter"] = (time.perf_counter(), torch.cuda.Event(enable_timing=True))
        marks["enter"][1].record()
    out = _execute(inputs)
    if first:
        marks["leave"] = (time.perf_counter(), torch.cuda.Event(enable_timing=True))
        marks["leave"][1].record()  # reached when the GPU has run the whole forward
    return out


engine.runner.execute = execute
_prepare = engine.runner.prepare


host_prof = cProfile.Profile() if args.cprofile else None


def prepare(batch):
    if "prepare" not in marks:
        marks["prepare"] = time.perf_counter()
    if host_prof is None:
        return _prepare(batch)
    host_prof.enable()
    try:
        return _prepare(batch)
    finally:
        host_prof.disable()


engine.runner.prepare = prepare


def prefill(i):
    """Wall ms of one prompt's prefill, each engine step's ms in it, and the event split."""
    engine.add_request(f"r{i}", {"prompt_token_ids": [(i * 7 + j) % 30000 + 1 for j in range(n)]},
                       params)
    torch.cuda.synchronize()
    marks.clear()
    start = torch.cuda.Event(enable_timing=True)
    start.record()  # the GPU is idle: this completes at once
    t = t0 = time.perf_counter()
    steps = []
    while engine.has_unfinished_requests():
        engine.step()
        steps.append(round((time.perf_counter() - t) * 1e3, 2))
        t = time.perf_counter()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) * 1e3
    (h_in, e_in), (h_out, e_out) = marks["enter"], marks["leave"]
    split = {"host_schedule": (marks["prepare"] - t0) * 1e3,
             "host_prepare": (h_in - marks["prepare"]) * 1e3,
             "host_before_execute": (h_in - t0) * 1e3, "host_launch": (h_out - h_in) * 1e3,
             "gpu_forward": e_in.elapsed_time(e_out),
             "after_forward": wall - start.elapsed_time(e_out)}
    return round(wall, 2), steps, split


time.sleep(args.sleep)
walls = [prefill(i) for i in range(args.reps)]
print(f"prefill {n}: wall ms {[w for w, _, _ in walls]}; steps of the last {walls[-1][1]}")
splits = [sp for _, _, sp in walls[1:] or walls]  # the first run may compile
print("events ms", {k: round(statistics.median(sp[k] for sp in splits), 3) for k in splits[0]})
if host_prof is not None:  # (the events above include its overhead)
    pstats.Stats(host_prof).sort_stats("tottime").print_stats(18)
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    with torch.profiler.record_function("prefill_wall"):
        prefill(99)
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=20, max_name_column_width=60))
if args.trace:
    prof.export_chrome_trace(args.trace)
print("timeline", timeline(prof.events(), "prefill_wall"))

