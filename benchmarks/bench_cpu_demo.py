"""CPU decode speed of the demo model (SmolLM2-135M Q4_1 GGUF): LitevLLM vs transformers.

Both decode the same chat prompt greedily for --output-len tokens (EOS ignored), float32,
same thread count. Prints ms/token for each and the ratio.
"""
import argparse
import json
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json-out")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from litevllm import LLM, SamplingParams
    from litevllm_gguf.demo import fetch_smollm2
    path = fetch_smollm2()
    llm = LLM(str(path))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = llm.apply_chat_template(messages)

    def ours(n):
        t = time.perf_counter()
        out = llm.generate({"prompt_token_ids": ids}, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True))
        return time.perf_counter() - t, out
    ours(a.output_len)  # warm-up
    first = min(ours(1)[0] for _ in range(3))
    full, out = min((ours(a.output_len) for _ in range(3)), key=lambda r: r[0])
    lite_ms = (full - first) / (a.output_len - 1) * 1e3

    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    x = torch.tensor([ids])

    def theirs(n):
        t = time.perf_counter()
        with torch.no_grad():
            hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - t
    theirs(a.output_len)
    hf_first = min(theirs(1) for _ in range(3))
    hf_full = min(theirs(a.output_len) for _ in range(3))
    hf_ms = (hf_full - hf_first) / (a.output_len - 1) * 1e3
    result = {"threads": a.threads, "prompt_tokens": len(ids), "output_len": a.output_len,
              "litevllm_decode_ms_per_token": lite_ms, "transformers_decode_ms_per_token": hf_ms,
              "speedup": hf_ms / lite_ms, "litevllm_text": out[0].outputs[0].text[:60]}
    print(json.dumps(result, indent=2))
    if a.json_out:
        json.dump(result, open(a.json_out, "w"), indent=2)


if __name__ == "__main__":
    main()
