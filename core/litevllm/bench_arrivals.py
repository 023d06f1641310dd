"""Poisson arrivals on the offline engine: TTFT and inter-token latency against request rate.

Requests join a running ``LLMEngine`` (``add_request``/``step``) at exponential gaps of mean
1/rate. TTFT runs from a request's scheduled arrival to the step that returned its first
token; each later step that returns tokens adds (gap since the previous one) / (tokens it
brought) once per token, so a multi-step burst of k tokens counts as k gaps of 1/k of it.
"""
from __future__ import annotations

import itertools
import random
import statistics
import time


def lengths(rng: random.Random, num_prompts: int, input_len: int | None, output_len: int | None,
            min_len: int, max_len: int) -> tuple[list[int], list[int]]:
    """Input and output lengths: fixed, or uniform in [min_len, max_len] (inputs drawn first)."""
    ins = [input_len or rng.randint(min_len, max_len) for _ in range(num_prompts)]
    outs = [output_len or rng.randint(min_len, max_len) for _ in range(num_prompts)]
    return ins, outs


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between ranks; 0.0 for no values."""
    if not values:
        return 0.0
    v = sorted(values)
    x = (len(v) - 1) * q / 100
    lo = int(x)
    return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (x - lo)


def measure_arrivals(llm, num_prompts: int, request_rate: float, input_len: int | None = None,
                     output_len: int | None = None, min_len: int = 100, max_len: int = 1024,
                     seed: int = 0, progress: bool = False, params_for=None,
                     warmup: bool = True) -> dict:
    """Serve ``num_prompts`` random-token prompts arriving as a Poisson process of
    ``request_rate`` requests/s; ``params_for(i, max_tokens)`` may give each one's
    SamplingParams (default greedy, ``ignore_eos``)."""
    from litevllm.bench import _peak_memory_gib, _random_prompts, _sync, request_params
    from litevllm.llm import _progress

    if request_rate <= 0:
        raise ValueError(f"request rate must be positive, got {request_rate}")
    engine = llm.engine
    rng = random.Random(seed)
    in_lens, out_lens = lengths(rng, num_prompts, input_len, output_len, min_len, max_len)
    prompts = _random_prompts(rng, engine.hf_config.vocab_size, in_lens)
    params_for = params_for or request_params
    gaps = [0.0] + [rng.expovariate(request_rate) for _ in range(num_prompts - 1)]
    arrivals = list(itertools.accumulate(gaps))
    if warmup:  # untimed prompts of the same lengths (no prefix-cache hits on the timed ones),
        # sampled as the run is (requests past the run's own indices)
        wrng = random.Random(seed + 1)
        k = min(16, num_prompts)
        llm.generate(_random_prompts(wrng, engine.hf_config.vocab_size, in_lens[:k]),
                     [params_for(num_prompts + i, 16) for i in range(k)])
    bar = _progress(num_prompts) if progress else None
    ttft, itl, last = [], [], {}
    n_out, kv_peak, added = 0, 0, 0
    _sync(llm)
    t0 = time.monotonic()
    while added < num_prompts or engine.has_unfinished_requests():
        now = time.monotonic() - t0
        while added < num_prompts and arrivals[added] <= now:
            engine.add_request(f"arr-{added}", prompts[added], params_for(added, out_lens[added]))
            added += 1
        if not engine.has_unfinished_requests():
            time.sleep(max(0.0, arrivals[added] - now))
            continue
        outputs = engine.step()
        t = time.monotonic() - t0
        kv_peak = max(kv_peak, engine.num_blocks - engine.block_manager.num_free_blocks)
        for out in outputs:
            n = len(out.outputs[0].delta_token_ids)
            if not n:
                continue
            n_out += n
            i = int(out.request_id[4:])
            if i not in last:
                ttft.append(t - arrivals[i])
                n -= 1
            if n:
                itl += [(t - last[i]) / n] * n if i in last else [0.0] * n
            last[i] = t
            if out.finished and bar is not None:
                bar.update(1)
    _sync(llm)
    elapsed = time.monotonic() - t0
    if bar is not None:
        bar.close()
    ms = [x * 1e3 for x in ttft], [x * 1e3 for x in itl]
    return {
        "num_prompts": num_prompts, "request_rate": request_rate, "elapsed_s": elapsed,
        "requests_per_s": num_prompts / elapsed, "output_tok_per_s": n_out / elapsed,
        "ttft_ms_p50": percentile(ms[0], 50), "ttft_ms_p99": percentile(ms[0], 99),
        "ttft_ms_mean": statistics.fmean(ms[0]) if ms[0] else 0.0,
        "itl_ms_p50": percentile(ms[1], 50), "itl_ms_p99": percentile(ms[1], 99),
        "itl_ms_mean": statistics.fmean(ms[1]) if ms[1] else 0.0,
        "kv_peak_gib": kv_peak * engine.runner.bytes_per_block() / 2**30,
        "peak_memory_gib": _peak_memory_gib(llm),
    }

