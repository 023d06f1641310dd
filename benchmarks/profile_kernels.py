"""Per-kernel GPU time of one eager decode step (torch.profiler), to see what a graph replays."""
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from litevllm import LLM, SamplingParams

cfg = Path(__file__).parent / "configs" / (sys.argv[1] if len(sys.argv) > 1 else "tinyllama-1.1b")
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1
llm = LLM(str(cfg), load_format="dummy", max_num_seqs=64, enforce_eager=True)
engine = llm.engine
params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
for i in range(batch):  # distinct prompts: identical ones share the prefix cache and, at
    # batch > 1, route every row to the same experts (a MoE step then reads 4 experts, not ~40)
    engine.add_request(f"r{i}", {"prompt_token_ids": [(i * 997 + j) % 30000 + 1 for j in range(128)]},
                       params)
for _ in range(20):
    engine.step()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    for _ in range(10):
        engine.step()
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))
