"""Offline throughput of Gemma / Gemma 2 at real sizes with dummy weights (needs a GPU).

    python benchmarks/bench_gemma.py --models gemma-2b gemma-2-2b gemma-2-9b --out gemma.json

Each model gets ``--num-prompts`` random prompts of ``--input-len`` tokens and generates
``--output-len`` tokens each (ignore_eos). Gemma 2's 4096-token sliding window only masks
anything past 4096 tokens: pass ``--input-len 5000`` to time that path.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from litevllm import LLM, SamplingParams

CONFIGS = Path(__file__).resolve().parent / "configs"


def bench(name: str, args) -> dict:
    llm = LLM(str(CONFIGS / name), load_format="dummy", kernels=args.kernels,
              max_model_len=args.input_len + args.output_len + 1, max_num_seqs=args.num_prompts)
    g = torch.Generator().manual_seed(0)
    prompts = [{"prompt_token_ids": torch.randint(3, 256000, (args.input_len,), generator=g)
                .tolist()} for _ in range(args.num_prompts)]
    params = SamplingParams(temperature=0, max_tokens=args.output_len, ignore_eos=True)
    llm.generate(prompts[:1], SamplingParams(temperature=0, max_tokens=2))  # warm up
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params)
    elapsed = time.perf_counter() - t0
    generated = sum(len(o.outputs[0].token_ids) for o in outs)
    result = {"model": name, "seconds": round(elapsed, 3), "num_prompts": args.num_prompts,
              "input_len": args.input_len, "output_len": args.output_len,
              "output_tok_s": round(generated / elapsed, 1),
              "total_tok_s": round((generated + args.num_prompts * args.input_len) / elapsed, 1),
              "attention": llm.engine.runner.attn.name, "device": torch.cuda.get_device_name()}
    print(json.dumps(result))
    del llm
    torch.cuda.empty_cache()
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["gemma-2b", "gemma-2-2b", "gemma-2-9b"])
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--input-len", type=int, default=512)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--kernels", default="auto")
    p.add_argument("--out")
    args = p.parse_args()
    results = [bench(m, args) for m in args.models]
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
