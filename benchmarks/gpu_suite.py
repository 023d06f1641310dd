"""The GPU benchmark suite behind benchmarks/RESULTS.md: one engine per model, several workloads.

    python benchmarks/gpu_suite.py --out $OUT/results.jsonl [--only tinyllama,llama3 ...]

Each line of the output file is one JSON result. Baselines (transformers) run in
benchmarks/hf_baseline.py in the same device call.
"""
import argparse
import gc
import json
import time
from pathlib import Path

import torch

from litevllm import LLM
from litevllm.bench import measure_latency, measure_throughput

CONFIGS = Path(__file__).parent / "configs"

SUITE = {
    "tinyllama": ("tinyllama-1.1b", dict(max_num_seqs=256, max_model_len=4096), [
        ("latency", dict(batch_size=1, input_len=128, output_len=128)),
        ("latency", dict(batch_size=32, input_len=128, output_len=128)),
        ("latency", dict(batch_size=1, input_len=2048, output_len=2, num_iters=5)),
        ("throughput", dict(num_prompts=256, min_len=100, max_len=1024)),
    ]),
    # same-run baseline for the default of 16 decode steps per host sync (CUDA graphs)
    "tinyllama_single_step": ("tinyllama-1.1b", dict(max_num_seqs=256, max_model_len=4096,
                                                     num_scheduler_steps=1), [
        ("latency", dict(batch_size=1, input_len=128, output_len=128)),
        ("latency", dict(batch_size=32, input_len=128, output_len=128)),
        ("throughput", dict(num_prompts=256, min_len=100, max_len=1024)),
    ]),
    "llama3": ("llama-3-8b", dict(max_num_seqs=64, max_model_len=4096), [
        ("latency", dict(batch_size=1, input_len=128, output_len=128)),
    ]),
    "qwen_moe": ("qwen1.5-moe-a2.7b", dict(max_num_seqs=256, max_model_len=4096), [
        ("latency", dict(batch_size=1, input_len=128, output_len=128)),
        ("latency", dict(batch_size=16, input_len=128, output_len=128)),
        ("throughput", dict(num_prompts=256, min_len=100, max_len=1024)),
    ]),
    "gemma2": ("gemma-2-2b", dict(max_num_seqs=64, max_model_len=4096), [
        ("latency", dict(batch_size=1, input_len=128, output_len=128)),
    ]),
    # issue 15's batch-1 / prefill rows without the throughput runs (`models` measures those)
    "tinyllama_latency": ("tinyllama-1.1b", dict(max_num_seqs=256, max_model_len=4096), [
        ("latency", dict(batch_size=1, input_len=128, output_len=128)),
        ("latency", dict(batch_size=32, input_len=128, output_len=128)),
        ("latency", dict(batch_size=128, input_len=128, output_len=128)),
        ("latency", dict(batch_size=1, input_len=2048, output_len=2, num_iters=5)),
    ]),
    "qwen_moe_latency": ("qwen1.5-moe-a2.7b", dict(max_num_seqs=64, max_model_len=4096), [
        ("latency", dict(batch_size=1, input_len=128, output_len=128)),
        ("latency", dict(batch_size=16, input_len=128, output_len=128)),
    ]),
    "gemma": ("gemma-2b", dict(max_num_seqs=64, max_model_len=4096), [
        ("latency", dict(batch_size=1, input_len=128, output_len=128)),
        ("latency", dict(batch_size=32, input_len=128, output_len=128)),
    ]),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--only", default=",".join(SUITE))
    p.add_argument("--enforce-eager", action="store_true")
    a = p.parse_args()
    with open(a.out, "a") as out:
        for name in a.only.split(","):
            try:  # one failing configuration must not cost the others their numbers
                run_suite(name, a.enforce_eager, out)
            except Exception as e:  # noqa: BLE001
                err = {"suite": name, "error": f"{type(e).__name__}: {e}"}
                print(json.dumps(err), flush=True)
                out.write(json.dumps(err) + "\n")
            gc.collect()
            torch.cuda.empty_cache()


def run_suite(name: str, enforce_eager: bool, out) -> None:
    config, engine_kw, runs = SUITE[name]
    t0 = time.perf_counter()
    llm = LLM(str(CONFIGS / config), load_format="dummy", enforce_eager=enforce_eager, **engine_kw)
    startup = time.perf_counter() - t0
    info = {"suite": name, "config": config, "startup_s": startup,
            "num_blocks": llm.engine.num_blocks,
            "graph_capture_s": llm.engine.runner.capture_seconds}
    print(json.dumps(info), flush=True)
    out.write(json.dumps(info) + "\n")
    for kind, kw in runs:
        fn = measure_latency if kind == "latency" else measure_throughput
        if kind == "throughput":
            kw = {"input_len": None, "output_len": None, **kw}
        result = {"suite": name, "config": config, "kind": kind, **fn(llm, **kw)}
        print(json.dumps(result), flush=True)
        out.write(json.dumps(result) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
