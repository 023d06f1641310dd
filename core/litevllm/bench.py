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


def _weight_bytes(llm, batch_size: int = 1) -> int:
    """Bytes of weights one decode step reads. Experts of MoE layers (modules with
    ``num_experts`` and ``top_k``) count at the expected fraction a batch touches:
    1 - (1 - top_k/E)^batch."""
    model = llm.engine.model
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    for m in model.modules():
        if hasattr(m, "num_experts") and hasattr(m, "top_k"):
            expert = sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
            touched = 1 - (1 - m.top_k / m.num_experts) ** batch_size
            total -= expert * (1 - touched)
    return int(total)


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


def measure_latency(llm, batch_size: int, input_len: int, output_len: int, num_iters: int = 5,
                    num_iters_warmup: int = 2, seed: int = 0, progress: bool = False) -> dict:
    """Median prefill time and decode step time of one batch of random prompts."""
    from litevllm import SamplingParams
    engine = llm.engine
    params = SamplingParams(temperature=0, max_tokens=output_len, ignore_eos=True)
    rng = random.Random(seed)
    prefill, decode = [], []
    iters = range(num_iters_warmup + num_iters)
    with click.progressbar(iters, label="iterations", file=click.get_text_stream("stderr")) \
            if progress else _nullbar(iters) as bar:
        for it in bar:
            prompts = _random_prompts(rng, engine.hf_config.vocab_size, [input_len] * batch_size)
            for i, p in enumerate(prompts):
                engine.add_request(f"lat-{it}-{i}", p, params)
            _sync(llm)
            start = time.perf_counter()
            first = None
            while engine.has_unfinished_requests():
                engine.step(unfinished_outputs=False)
                if first is None and not engine.scheduler.waiting and all(
                        s.num_output_tokens for r in engine.requests.values() for s in r.seqs):
                    _sync(llm)
                    first = time.perf_counter()
            _sync(llm)
            end = time.perf_counter()
            if it >= num_iters_warmup:
                first = first or end
                prefill.append(first - start)
                # per decode position (ignore_eos: every sequence makes output_len tokens), so
                # multi-step runs, which make several tokens per engine step, compare fairly
                decode.append((end - first) / max(1, output_len - 1))
    step_ms = statistics.median(decode) * 1e3
    prefill_ms = statistics.median(prefill) * 1e3
    return {
        "device": _device_name(llm), "dtype": str(engine.dtype).replace("torch.", ""),
        "kernels": engine.config.kernels, "attention": engine.runner.attn.name,
        **_kv_cache_facts(engine),
        "cuda_graphs": bool(engine.runner.graphs), "scheduler_steps": engine.num_scheduler_steps,
        "batch_size": batch_size, "input_len": input_len, "output_len": output_len,
        "prefill_ms": prefill_ms, "decode_ms_per_step": step_ms,
        "decode_tok_per_s": batch_size / (step_ms / 1e3),
        "end_to_end_tok_per_s": batch_size * output_len / ((prefill_ms + step_ms * (output_len - 1)) / 1e3),
        "weights_gb_per_s": _weight_bytes(llm, batch_size) / (step_ms / 1e3) / 1e9,
        "peak_memory_gib": _peak_memory_gib(llm),
        "graph_capture_s": engine.runner.capture_seconds,
    }


def _kv_cache_facts(engine) -> dict:
    return {"kv_cache_dtype": str(engine.kv_cache_dtype).replace("torch.", ""),
            "kv_cache_tokens": engine.num_blocks * engine.config.cache.block_size}


def show_progress(no_progress: bool) -> bool:
    """A progress bar only on a terminal, and not with --no-progress."""
    import sys
    return not no_progress and sys.stderr.isatty()


def _nullbar(it):
    import contextlib
    return contextlib.nullcontext(it)


def _device_name(llm) -> str:
    import torch
    dev = llm.engine.device
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


@bench.command()
@engine_options
@click.option("--input-len", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--output-len", type=click.IntRange(min=2), default=128, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--num-iters", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--num-iters-warmup", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--json-out", default=None, help="Also write the results as JSON.")
def latency(input_len, output_len, batch_size, num_iters, num_iters_warmup, json_out, **o):
    """Prefill time, decode ms/step, tok/s, GB/s and peak memory for one batch."""
    try:
        t0 = time.perf_counter()
        llm = build_llm(o)
        startup = time.perf_counter() - t0
        result = measure_latency(llm, batch_size, input_len, output_len, num_iters,
                                 num_iters_warmup, o["seed"], progress=True)
    except Exception as e:
        fail(e)
    _emit({"model": o["model"], **result, "startup_s": startup}, json_out)


# (num_prompts, min_len, max_len) when not given: the GPU workload takes minutes on a CPU
THROUGHPUT_DEFAULTS = {"cuda": (256, 100, 1024), "cpu": (8, 16, 64)}


@bench.command()
@engine_options
@click.option("--num-prompts", type=click.IntRange(min=1), default=None,
              help="Default 256 on a GPU, 8 on the CPU.")
@click.option("--input-len", type=click.IntRange(min=1), default=None, help="Fixed input length.")
@click.option("--output-len", type=click.IntRange(min=1), default=None, help="Fixed output length.")
@click.option("--min-len", type=click.IntRange(min=1), default=None,
              help="Uniform length range, low end (default 100 on a GPU, 16 on the CPU).")
@click.option("--max-len", type=click.IntRange(min=1), default=None,
              help="Uniform length range, high end (default 1024 on a GPU, 64 on the CPU).")
@click.option("--json-out", default=None, help="Also write the results as JSON.")
@click.option("--request-rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Poisson arrivals at this many requests/s (TTFT/ITL p50/p99), not all at once.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Sampling temperature; above 0 each request samples with its own seed.")
@click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0,
              show_default=True, help="Nucleus sampling mass (with --temperature).")
@click.option("--no-progress", is_flag=True, help="No progress bar (never shown off a terminal).")
def throughput(num_prompts, input_len, output_len, min_len, max_len, json_out, request_rate,
               temperature, top_p, no_progress, **o):
    """Requests/s and tokens/s on a synthetic workload (lengths uniform in [min, max])."""
    if min_len is not None and max_len is not None and min_len > max_len:
        raise click.BadParameter(f"--min-len {min_len} exceeds --max-len {max_len}")
    progress = show_progress(no_progress)
    try:
        llm = build_llm(o)
    except Exception as e:
        fail(e)
    device = llm.engine.device.type
    given = {"num-prompts": num_prompts, "min-len": min_len, "max-len": max_len}
    defaults = dict(zip(given, THROUGHPUT_DEFAULTS["cuda" if device == "cuda" else "cpu"]))
    picked = {k: defaults[k] for k, v in given.items() if v is None}
    if picked and device != "cuda":
        gpu = " ".join(f"--{k} {v}" for k, v in zip(given, THROUGHPUT_DEFAULTS["cuda"]))
        click.echo(f"{device}: small defaults {' '.join(f'--{k} {v}' for k, v in picked.items())}"
                   f" (GPU: {gpu}); pass them to change", err=True)
    num_prompts, min_len, max_len = ({**given, **picked}[k] for k in given)
    if min_len > max_len:  # one given, the other a default
        raise click.BadParameter(f"--min-len {min_len} exceeds --max-len {max_len}")
    try:
        if request_rate:
            from litevllm.bench_arrivals import measure_arrivals
            result = measure_arrivals(
                llm, num_prompts, request_rate, input_len, output_len, min_len, max_len,
                o["seed"], progress,
                params_for=lambda i, n: request_params(i, n, o["seed"], temperature, top_p))
        else:
            result = measure_throughput(llm, num_prompts, input_len, output_len, min_len,
                                        max_len, o["seed"], progress=progress,
                                        temperature=temperature, top_p=top_p)
    except Exception as e:
        fail(e)
    _emit({"model": o["model"], **result}, json_out)


def request_params(i: int, max_tokens: int, seed: int = 0, temperature: float = 0.0,
                   top_p: float = 1.0):
    """Request ``i``'s SamplingParams in the synthetic workloads: greedy, or sampled with a
    seed of its own."""
    from litevllm import SamplingParams
    return SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                          ignore_eos=True, seed=seed * 100_003 + i if temperature > 0 else None)


def measure_throughput(llm, num_prompts: int, input_len: int | None, output_len: int | None,
                       min_len: int, max_len: int, seed: int = 0, progress: bool = False,
                       temperature: float = 0.0, top_p: float = 1.0, warmup: bool = True) -> dict:
    """All prompts submitted at once; lengths fixed or uniform in [min_len, max_len]. Input
    tokens served from the prefix cache are reported apart and not counted as throughput.
    With ``temperature`` > 0 every request samples with its own seed. ``warmup``: first an
    untimed run of the same shapes (below)."""
    engine = llm.engine
    rng = random.Random(seed)
    in_lens = [input_len or rng.randint(min_len, max_len) for _ in range(num_prompts)]
    out_lens = [output_len or rng.randint(min_len, max_len) for _ in range(num_prompts)]
    prompts = _random_prompts(rng, engine.hf_config.vocab_size, in_lens)
    params = [request_params(i, n, seed, temperature, top_p) for i, n in enumerate(out_lens)]
    # warm-up on prompts of the same shapes that are not timed (batched and chunked prefill,
    # mixed steps, multi-step decode at the run's batch size, up to 256: kernels' split counts
    # and tiles follow the batch; the run's sampling), so Triton compiles its variants
    # outside the timed run and the timed prompts find nothing of theirs in the prefix cache
    if warmup:
        n = min(256, engine.config.scheduler.max_num_seqs) if engine.device.type == "cuda" else 2
        warm = _random_prompts(random.Random(seed + 1), engine.hf_config.vocab_size, in_lens[:n])
        llm.generate(warm, [request_params(i, 20, seed + 1, temperature, top_p)
                            for i in range(len(warm))])
    _sync(llm)
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=progress)
    _sync(llm)
    elapsed = time.perf_counter() - start
    n_out = sum(len(r.outputs[0].token_ids) for r in outputs)
    cached = sum(r.num_cached_tokens for r in outputs)
    computed = sum(in_lens) - cached
    ttft = [r.metrics.first_token_time - r.metrics.arrival_time for r in outputs]
    itl = [(r.metrics.finished_time - r.metrics.first_token_time) / max(1, len(r.outputs[0].token_ids) - 1)
           for r in outputs]
    return {
        "device": _device_name(llm), "num_prompts": num_prompts,
        "elapsed_s": elapsed, "requests_per_s": num_prompts / elapsed,
        "output_tok_per_s": n_out / elapsed, "total_tok_per_s": (n_out + computed) / elapsed,
        "input_tokens_computed": computed, "input_tokens_cached": cached,
        "ttft_ms_median": statistics.median(ttft) * 1e3, "itl_ms_mean": statistics.mean(itl) * 1e3,
        "prefix_cache_hit_rate": cached / max(1, sum(in_lens)),
        "peak_memory_gib": _peak_memory_gib(llm), **_kv_cache_facts(engine),
        "scheduler_steps": engine.num_scheduler_steps, "async_scheduling": engine.async_scheduling,
        "temperature": temperature, "top_p": top_p,
        **{k: v for k, v in engine.stats().items() if k.startswith("spec_")},
    }
