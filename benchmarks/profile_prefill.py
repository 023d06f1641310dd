"""Wall time and per-kernel GPU time of one long prefill step (TinyLlama, 2048 tokens)."""
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from litevllm import LLM, SamplingParams

cfg = Path(__file__).parent / "configs" / (sys.argv[1] if len(sys.argv) > 1 else "tinyllama-1.1b")
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2048
llm = LLM(str(cfg), load_format="dummy", max_num_seqs=64, max_model_len=n + 64)
engine = llm.engine
params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)


def prefill(i):
    engine.add_request(f"r{i}", {"prompt_token_ids": [(i * 7 + j) % 30000 + 1 for j in range(n)]},
                       params)
    torch.cuda.synchronize()
    t = time.perf_counter()
    while engine.has_unfinished_requests():
        engine.step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1e3


walls = [prefill(i) for i in range(6)]
print(f"prefill {n}: wall ms {[round(w, 2) for w in walls]}")
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    prefill(99)
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=20, max_name_column_width=60))
