"""n-gram speculative decoding and structured-output overhead on one GPU (the issue 17 targets).

    python benchmarks/bench_spec.py --model benchmarks/configs/tinyllama-1.1b --out $OUT/spec.jsonl

With a real checkpoint pass ``--load-format auto``. On dummy weights the model does not copy text,
so besides a grounded prompt (a passage, the model's own continuation of it, the passage again)
the n-gram part also reports an oracle proposer (the plain greedy continuation: 100% and ~75%
acceptance), which shows the speed-up that a given acceptance rate buys.

Targets: grounded >= 1.8x and non-repetitive >= 0.95x tokens/s at batch 1; a JSON schema costs
<= 10% (batch 1) and <= 15% (batch 64) of decode time.
"""
import argparse
import json
import random
import time

import torch

from litevllm import LLM, SamplingParams, StructuredOutputsParams

SCHEMA = {"type": "object", "properties": {
    "title": {"type": "string"}, "year": {"type": "integer"},
    "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["title", "year", "tags"]}


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_generate(llm, prompts, params):
    sync()
    t = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    sync()
    elapsed = time.perf_counter() - t
    tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    return outs, elapsed, tokens


def emit(out, record):
    print(json.dumps(record), flush=True)
    out.write(json.dumps(record) + "\n")
    out.flush()


def spec_delta(before, after):
    keys = ("spec_num_drafts", "spec_num_draft_tokens", "spec_num_accepted_tokens")
    d = {k: after[k] - before[k] for k in keys}
    d["acceptance_rate"] = d["spec_num_accepted_tokens"] / max(1, d["spec_num_draft_tokens"])
    d["mean_acceptance_length"] = 1 + d["spec_num_accepted_tokens"] / max(1, d["spec_num_drafts"])
    return d


def bench_ngram(a, common, out):
    plain = LLM(a.model, **common)
    spec_cfg = {"method": "ngram", "num_speculative_tokens": a.k, "prompt_lookup_max": a.lookup_max,
                "prompt_lookup_min": 1}
    spec = LLM(a.model, speculative_config=spec_cfg, **common)
    vocab = plain.engine.hf_config.vocab_size
    rng = random.Random(0)
    greedy = SamplingParams(temperature=0, max_tokens=a.output_len, ignore_eos=True)
    passage = [rng.randrange(100, vocab) for _ in range(a.input_len)]
    own = plain.generate({"prompt_token_ids": passage}, greedy)[0].outputs[0].token_ids
    workloads = {"grounded": passage + own + passage,
                 "non_repetitive": [rng.randrange(100, vocab) for _ in range(a.input_len)]}
    for name, prompt in workloads.items():
        for llm in (plain, spec):  # warm-up: compile, capture, settle
            llm.generate({"prompt_token_ids": prompt[:64]}, SamplingParams(temperature=0, max_tokens=8))
        _, t_plain, n_plain = timed_generate(plain, [prompt], greedy)
        before = spec.engine.stats()
        outs, t_spec, n_spec = timed_generate(spec, [prompt], greedy)
        emit(out, {"bench": "ngram", "workload": name, "batch_size": 1, "k": a.k,
                   "plain_tok_per_s": n_plain / t_plain, "spec_tok_per_s": n_spec / t_spec,
                   "speedup": (n_spec / t_spec) / (n_plain / t_plain),
                   **spec_delta(before, spec.engine.stats())})
    # oracle proposer: what a given acceptance rate buys (verify cost vs accepted tokens)
    prompt = workloads["non_repetitive"]
    ref = plain.generate({"prompt_token_ids": prompt}, greedy)[0].outputs[0].token_ids
    oracle = prompt + ref
    _, t_plain, n_plain = timed_generate(plain, [prompt], greedy)
    for spoil in (0, 4):
        def propose(tokens, k, spoil=spoil):
            draft = oracle[len(tokens):len(tokens) + k]
            return [t + 1 if spoil and (len(tokens) + i) % spoil == 0 else t
                    for i, t in enumerate(draft)]
        spec.engine.spec.proposer.propose = propose
        spec.engine.spec.paused = 0
        before = spec.engine.stats()
        _, t_spec, n_spec = timed_generate(spec, [prompt], greedy)
        emit(out, {"bench": "ngram", "workload": f"oracle_spoil_every_{spoil}", "batch_size": 1,
                   "k": a.k, "plain_tok_per_s": n_plain / t_plain, "spec_tok_per_s": n_spec / t_spec,
                   "speedup": (n_spec / t_spec) / (n_plain / t_plain),
                   **spec_delta(before, spec.engine.stats())})
    del plain, spec


def synthetic_tokenizer(vocab_size: int) -> str:
    """A byte-level BPE tokenizer of the model's vocabulary size, for config-only model dirs
    (dummy weights have no tokenizer; the grammar needs one of realistic size)."""
    import string
    import tempfile

    from litevllm.testing import tiny_tokenizer
    rng = random.Random(0)
    chars = string.ascii_letters + string.digits + '{}[]:,"_- '
    words = ["".join(rng.choice(chars) for _ in range(rng.randrange(2, 12))) for _ in range(80000)]
    path = tempfile.mkdtemp()
    tiny_tokenizer(path, vocab_size=vocab_size,
                   corpus=[" ".join(words[i:i + 50]) for i in range(0, len(words), 50)],
                   chat_template=None)
    return path


def bench_structured(a, common, out):
    from pathlib import Path
    config = json.loads((Path(a.model) / "config.json").read_text())
    if not any((Path(a.model) / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
        common = {**common, "tokenizer": synthetic_tokenizer(config["vocab_size"])}
    llm = LLM(a.model, **common)
    vocab = llm.engine.hf_config.vocab_size
    rng = random.Random(1)
    so = StructuredOutputsParams(json=SCHEMA)
    for batch in (1, 64):
        prompts = [[rng.randrange(100, vocab) for _ in range(32)] for _ in range(batch)]
        free = SamplingParams(temperature=0, max_tokens=a.output_len, ignore_eos=True)
        constrained = SamplingParams(temperature=0, max_tokens=a.output_len, structured_outputs=so)
        llm.generate({"prompt_token_ids": prompts[0]}, constrained)   # compile + warm up
        steps = llm.engine.num_scheduler_steps
        row = {"bench": "structured", "batch_size": batch}
        for label, params, k in (("free", free, steps), ("free_single_step", free, 1),
                                 ("json", constrained, steps)):
            llm.engine.num_scheduler_steps = k
            timed_generate(llm, prompts, params)  # untimed: this batch's shapes compile here
            _, elapsed, tokens = timed_generate(llm, prompts, params)
            row[f"{label}_ms_per_token_step"] = elapsed / (tokens / batch) * 1e3
            row[f"{label}_tokens"] = tokens
        llm.engine.num_scheduler_steps = steps
        row["overhead_vs_free"] = row["json_ms_per_token_step"] / row["free_ms_per_token_step"] - 1
        row["overhead_vs_single_step"] = \
            row["json_ms_per_token_step"] / row["free_single_step_ms_per_token_step"] - 1
        emit(out, row)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--load-format", default="dummy")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--lookup-max", type=int, default=4)
    p.add_argument("--input-len", type=int, default=512)
    p.add_argument("--output-len", type=int, default=256)
    p.add_argument("--only", default="ngram,structured")
    a = p.parse_args()
    common = dict(load_format=a.load_format, max_model_len=4096, max_num_seqs=64,
                  gpu_memory_utilization=0.4)
    with open(a.out, "a") as out:
        for part in a.only.split(","):
            try:
                {"ngram": bench_ngram, "structured": bench_structured}[part](a, common, out)
            except Exception as e:  # noqa: BLE001 - report, go on with the other part
                emit(out, {"bench": part, "error": f"{type(e).__name__}: {e}"})
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
