"""Where a decode step's host time goes: cProfile of the engine loop vs raw CUDA-graph replay."""
import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch

from litevllm import LLM, SamplingParams

cfg = Path(__file__).parent / "configs" / (sys.argv[1] if len(sys.argv) > 1 else "tinyllama-1.1b")
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1
llm = LLM(str(cfg), load_format="dummy", max_num_seqs=256)
engine = llm.engine
params = SamplingParams(temperature=0, max_tokens=128, ignore_eos=True)


def run():
    for i in range(batch):
        engine.add_request(f"r{time.perf_counter()}-{i}", {"prompt_token_ids": list(range(1, 129))}, params)
    while engine.has_unfinished_requests():
        engine.step()
    torch.cuda.synchronize()


run()
for i in range(batch):
    engine.add_request(f"p{i}", {"prompt_token_ids": list(range(1, 129))}, params)
torch.cuda.synchronize()
prof = cProfile.Profile()
t = time.perf_counter()
prof.enable()
engine.step()
torch.cuda.synchronize()
prof.disable()
print(f"prefill step {((time.perf_counter() - t) * 1e3):.1f} ms")
pstats.Stats(prof).sort_stats("cumtime").print_stats(18)
while engine.has_unfinished_requests():
    engine.step()
t = time.perf_counter()
run()
print(f"end-to-end {((time.perf_counter() - t) * 1e3):.1f} ms for 128 tokens, batch {batch}")
prof = cProfile.Profile()
prof.enable()
run()
prof.disable()
pstats.Stats(prof).sort_stats("tottime").print_stats(22)
bs = min(b for b in engine.runner.graphs if b >= batch)
graph = engine.runner.graphs[bs][0]
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
for _ in range(10):
    graph.replay()
start.record()
for _ in range(100):
    graph.replay()
end.record()
torch.cuda.synchronize()
print(f"graph replay (batch bucket {bs}): {start.elapsed_time(end) / 100:.3f} ms")
