"""Transformers baseline on dummy weights: greedy decode with a static KV cache + torch.compile
(or eager). Reports ms/step the way `lite bench latency` does:
(time for prefill + N tokens - time for prefill + 1 token) / (N - 1).

transformers >= 4.47 compiles the forward itself when the static cache is used
(``generation_config.compile_config``); we set that config and let it do so. Compiling
``model.forward`` as well compiles twice and fails.
"""
import argparse
import json
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def run(model, batch, input_len, output_len, vocab, device):
    ids = torch.randint(0, vocab, (batch, input_len), device=device)
    mask = torch.ones_like(ids)

    def gen(n):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                       do_sample=False)
        if device == "cuda":
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
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json-out")
    a = p.parse_args()
    cfg = AutoConfig.from_pretrained(a.config_dir)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if a.device == "cuda" else torch.float32
    with torch.device(a.device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
    gc = model.generation_config
    gc.pad_token_id = gc.pad_token_id if gc.pad_token_id is not None else 0
    if a.mode == "static-compile":
        gc.cache_implementation = "static"
        try:  # transformers compiles the forward itself when a static cache is used
            from transformers import CompileConfig
            gc.compile_config = CompileConfig(fullgraph=False)  # robustness over a few µs
            # transformers auto-compiles only on accelerators unless told otherwise (CPU runs)
            gc.compile_config._compile_all_devices = a.device != "cuda"
        except ImportError:  # older transformers: compile the forward ourselves
            model.forward = torch.compile(model.forward, mode="reduce-overhead")
    results = []
    for b in map(int, a.batch_sizes.split(",")):
        r = {"baseline": f"transformers {a.mode}", "device": a.device,
             **run(model, b, a.input_len, a.output_len, cfg.vocab_size, a.device)}
        print(json.dumps(r), flush=True)
        results.append(r)
    if a.json_out:
        json.dump(results, open(a.json_out, "w"), indent=2)


if __name__ == "__main__":
    main()
