"""``lite bench latency`` and ``lite bench throughput`` on random token prompts."""
from __future__ import annotations

import json
import random
import statistics
import time

import click

from litevllm.cli import build_llm, engine_options, fail


def _sync(llm):
    import torch
    if llm.engine.device.type == "cuda":
        torch.cuda.synchronize()


def _peak_memory_gib(llm) -> float:
    import torch
    if llm.engine.device.type == "cuda":
        return torch.cuda.max_memory_allocated(llm.engine.device) / 2**30
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _weight_bytes(llm) -> int:
    return sum(p.numel() * p.element_size() for p in llm.engine.model.parameters())


def _random_prompts(rng: random.Random, vocab: int, lens: list[int]) -> list[dict]:
    return [{"prompt_token_ids": [rng.randrange(vocab) for _ in range(n)]} for n in lens]


def _emit(result: dict, json_out: str | None):
    width = max(len(k) for k in result)
    for k, v in result.items():
        click.echo(f"{k:<{width}}  {v:.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(result, f, indent=2)


@click.group()
def bench():
    """Benchmarks: latency of one batch, throughput of a synthetic workload."""


@bench.command()
@engine_options
@click.option("--input-len", type=int, default=128, show_default=True)
@click.option("--output-len", type=int, default=128, show_default=True)
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--num-iters", type=int, default=5, show_default=True)
@click.option("--num-iters-warmup", type=int, default=2, show_default=True)
@click.option("--json-out", default=None, help="Also write the results as JSON.")
def latency(input_len, output_len, batch_size, num_iters, num_iters_warmup, json_out, **o):
    """Prefill time, decode ms/step, tok/s, GB/s and peak memory for one batch."""
    from litevllm import SamplingParams
    try:
        t0 = time.perf_counter()
        llm = build_llm(o)
        startup = time.perf_counter() - t0
    except Exception as e:
        fail(e)
    engine = llm.engine
    params = SamplingParams(temperature=0, max_tokens=output_len, ignore_eos=True)
    rng = random.Random(o["seed"])
    prefill, decode = [], []
    with click.progressbar(range(num_iters_warmup + num_iters), label="iterations",
                           file=click.get_text_stream("stderr")) as bar:
        for it in bar:
            for i, p in enumerate(_random_prompts(rng, engine.hf_config.vocab_size, [input_len] * batch_size)):
                engine.add_request(f"lat-{it}-{i}", p, params)
            _sync(llm)
            start = time.perf_counter()
            first = None
            steps_after_first = 0
            while engine.has_unfinished_requests():
                outs = engine.step()
                if first is None and all(len(s.token_ids) > s.num_prompt_tokens for r in engine.requests.values() for s in r.seqs) \
                        and not engine.scheduler.waiting:
                    _sync(llm)
                    first = time.perf_counter()
                elif first is not None and outs:
                    steps_after_first += 1
            _sync(llm)
            end = time.perf_counter()
            if it >= num_iters_warmup:
                first = first or end
                prefill.append(first - start)
                decode.append((end - first) / max(1, steps_after_first))
    step_ms = statistics.median(decode) * 1e3
    result = {
        "model": o["model"], "device": str(engine.device), "dtype": str(engine.dtype).replace("torch.", ""),
        "kernels": o["kernels"], "cuda_graphs": bool(engine.runner.graphs),
        "batch_size": batch_size, "input_len": input_len, "output_len": output_len,
        "prefill_ms": statistics.median(prefill) * 1e3, "decode_ms_per_step": step_ms,
        "decode_tok_per_s": batch_size / (step_ms / 1e3),
        "end_to_end_tok_per_s": batch_size * output_len / (statistics.median(prefill) + statistics.median(decode) * (output_len - 1)),
        "weights_gb_per_s": _weight_bytes(llm) / (step_ms / 1e3) / 1e9,
        "peak_memory_gib": _peak_memory_gib(llm), "startup_s": startup,
        "graph_capture_s": engine.runner.capture_seconds,
    }
    _emit(result, json_out)


@bench.command()
@engine_options
@click.option("--num-prompts", type=int, default=256, show_default=True)
@click.option("--input-len", type=int, default=None, help="Fixed input length.")
@click.option("--output-len", type=int, default=None, help="Fixed output length.")
@click.option("--min-len", type=int, default=100, show_default=True, help="Uniform length range, low end.")
@click.option("--max-len", type=int, default=1024, show_default=True, help="Uniform length range, high end.")
@click.option("--json-out", default=None)
def throughput(num_prompts, input_len, output_len, min_len, max_len, json_out, **o):
    """Requests/s and tokens/s on a synthetic workload (lengths uniform in [min, max])."""
    from litevllm import SamplingParams
    try:
        llm = build_llm(o)
    except Exception as e:
        fail(e)
    engine = llm.engine
    rng = random.Random(o["seed"])
    in_lens = [input_len or rng.randint(min_len, max_len) for _ in range(num_prompts)]
    out_lens = [output_len or rng.randint(min_len, max_len) for _ in range(num_prompts)]
    prompts = _random_prompts(rng, engine.hf_config.vocab_size, in_lens)
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in out_lens]
    # warm-up so kernel compilation stays out of the numbers
    llm.generate(prompts[:2], [SamplingParams(max_tokens=4, ignore_eos=True)] * 2)
    _sync(llm)
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=True)
    _sync(llm)
    elapsed = time.perf_counter() - start
    n_out = sum(len(o_.outputs[0].token_ids) for o_ in outputs)
    ttft = [o_.metrics.first_token_time - o_.metrics.arrival_time for o_ in outputs]
    itl = [(o_.metrics.finished_time - o_.metrics.first_token_time) / max(1, len(o_.outputs[0].token_ids) - 1)
           for o_ in outputs]
    result = {
        "model": o["model"], "device": str(engine.device), "num_prompts": num_prompts,
        "elapsed_s": elapsed, "requests_per_s": num_prompts / elapsed,
        "output_tok_per_s": n_out / elapsed, "total_tok_per_s": (n_out + sum(in_lens)) / elapsed,
        "ttft_ms_median": statistics.median(ttft) * 1e3, "itl_ms_mean": statistics.mean(itl) * 1e3,
        "prefix_cache_hit_rate": engine.stats()["prefix_cache_hit_rate"],
        "peak_memory_gib": _peak_memory_gib(llm),
    }
    _emit(result, json_out)
