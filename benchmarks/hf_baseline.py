"""Transformers baseline on dummy weights: static KV cache + torch.compile, greedy decode.

Reports ms/step at each batch size the same way `lite bench latency` does:
(time for input+output tokens - time for prefill + 1 token) / (output_len - 1).
"""
import argparse
import json
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def run(model, batch, input_len, output_len, vocab):
    ids = torch.randint(0, vocab, (batch, input_len), device="cuda")
    mask = torch.ones_like(ids)

    def gen(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        torch.cuda.synchronize()
        return time.perf_counter() - t
    gen(output_len)  # compile / warm up
    gen(output_len)
    first = min(gen(1) for _ in range(3))
    full = min(gen(output_len) for _ in range(3))
    return {"batch_size": batch, "prefill_ms": first * 1e3,
            "decode_ms_per_step": (full - first) / (output_len - 1) * 1e3}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("config_dir")
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--mode", choices=["static-compile", "eager"], default="static-compile")
    p.add_argument("--json-out")
    a = p.parse_args()
    cfg = AutoConfig.from_pretrained(a.config_dir)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).eval()
    if a.mode == "static-compile":
        model.generation_config.cache_implementation = "static"
        model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    results = []
    for b in map(int, a.batch_sizes.split(",")):
        r = {"baseline": f"transformers {a.mode}", **run(model, b, a.input_len, a.output_len, cfg.vocab_size)}
        print(json.dumps(r))
        results.append(r)
    if a.json_out:
        json.dump(results, open(a.json_out, "w"), indent=2)


if __name__ == "__main__":
    main()
