"""Scaling sweeps on the offline engine, in one process, written as one JSON file:

- ``prompts``: all prompts at once, lengths U[min, max]: throughput and peak memory (allocator
  peak, and peak KV cache in use) against the number of prompts;
- ``lengths``: ``--length-prompts`` prompts with input = output = L, against L;
- ``rates``: Poisson arrivals (``litevllm.bench_arrivals``), lengths U[min, max], about
  ``--rate-duration`` seconds of arrivals per rate: TTFT and inter-token latency p50/p99;
- ``sampling``: ``--sampling-prompts`` prompts at once, lengths U[min, max], greedy and then
  sampled (temperature 0.6, a seed per request), through the arrivals driver at an unbounded
  rate (so both pay the same streaming-output cost): the sampled/greedy throughput ratio.

GPU (the issue-16 figures; ~5 min on an H200)::

    python benchmarks/bench_scaling.py --model benchmarks/configs/tinyllama-1.1b \\
        --load-format dummy --max-model-len 4096 --out benchmarks/results/h200_scaling.json
    python benchmarks/plot_scaling.py benchmarks/results/h200_scaling.json --out-dir benchmarks/plots

CPU smoke test (tiny model): see tests/test_bench_scaling.py.
"""
from __future__ import annotations

import contextlib
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import click

from litevllm.bench import _device_name, measure_throughput, request_params
from litevllm.bench_arrivals import measure_arrivals
from litevllm.cli import build_llm, engine_options


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


@contextlib.contextmanager
def kv_peak(engine, result: dict):
    """Record the most KV-cache blocks in use during any step as ``result['kv_peak_gib']``."""
    step, peak = engine.step, [0]

    def tracked(*args, **kwargs):
        out = step(*args, **kwargs)
        peak[0] = max(peak[0], engine.num_blocks - engine.block_manager.num_free_blocks)
        return out
    engine.step = tracked
    try:
        yield
    finally:
        del engine.step
        result["kv_peak_gib"] = peak[0] * engine.runner.bytes_per_block() / 2**30


def _reset_peak(llm) -> None:
    import torch
    if llm.engine.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(llm.engine.device)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return ""


def _line(rec: dict) -> str:
    x = {"prompts": "num_prompts", "lengths": "length", "rates": "request_rate",
         "sampling": "sampling"}[rec["sweep"]]
    s = f"{rec['sweep']:<8} {x}={rec[x]:<7} {rec['output_tok_per_s']:9.0f} out tok/s"
    if rec["sweep"] in ("rates", "sampling"):
        s += (f"  ttft p50/p99 {rec['ttft_ms_p50']:.0f}/{rec['ttft_ms_p99']:.0f} ms"
              f"  itl p50/p99 {rec['itl_ms_p50']:.1f}/{rec['itl_ms_p99']:.1f} ms")
    else:
        s += f"  ttft p50 {rec['ttft_ms_median']:.0f} ms"
    return s + f"  peak {rec['peak_memory_gib']:.3g} GiB  kv {rec['kv_peak_gib']:.3g} GiB"


@click.command()
@engine_options
@click.option("--sweeps", default="sampling,prompts,rates,lengths", show_default=True)
@click.option("--prompt-counts", default="64,256,1024,4096", show_default=True)
@click.option("--lengths", default="128,256,512,1024,2048,4096,8192", show_default=True,
              help="Input = output length per point.")
@click.option("--length-prompts", type=int, default=64, show_default=True)
@click.option("--rates", default="4,8,16,32,64", show_default=True, help="Requests/s.")
@click.option("--rate-duration", type=float, default=10.0, show_default=True,
              help="Seconds of arrivals per rate (at least 16 requests).")
@click.option("--sampling-prompts", type=int, default=256, show_default=True)
@click.option("--min-len", type=int, default=100, show_default=True)
@click.option("--max-len", type=int, default=1024, show_default=True)
@click.option("--label", default=None, help="Legend label in the plots (default: model name).")
@click.option("--out", required=True, help="JSON file to write.")
def main(sweeps, prompt_counts, lengths, length_prompts, rates, rate_duration, sampling_prompts,
         min_len, max_len, label, out, **o):
    sweeps = set(sweeps.split(","))
    records: list[dict] = []
    meta = {"model": o["model"], "label": label or Path(o["model"]).name, "commit": _commit(),
            "argv": sys.argv[1:], "min_len": min_len, "max_len": max_len}

    def save():
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps({"meta": meta, "records": records}, indent=2))

    def seed() -> int:
        """A seed of its own per point: prompts drawn from one seed would share prefixes with
        an earlier point's (and its warm-up's, seed + 1), which the prefix cache then serves."""
        return o["seed"] + 10 * len(records)

    def point(llm, sweep: str, fn, **keys):
        _reset_peak(llm)
        rec = {"sweep": sweep, **keys}
        with kv_peak(llm.engine, rec):
            rec.update(fn())
        rec.update(keys)
        records.append(rec)
        click.echo(_line(rec))
        save()  # a partial file survives a time-out

    t0 = time.perf_counter()
    llm = build_llm(o)
    meta.update(device=_device_name(llm), dtype=str(llm.engine.dtype).replace("torch.", ""),
                startup_s=time.perf_counter() - t0, scheduler_steps=llm.engine.num_scheduler_steps)
    if "sampling" in sweeps:
        modes = {"greedy": request_params,
                 "sampled": lambda i, n: request_params(i, n, o["seed"], temperature=0.6)}
        for mode, params_for in modes.items():
            point(llm, "sampling", lambda: measure_arrivals(
                llm, sampling_prompts, 1e9, None, None, min_len, max_len, seed(),
                params_for=params_for), sampling=mode)
        greedy, sampled = (r["output_tok_per_s"] for r in records[-2:])
        meta["sampled_over_greedy"] = sampled / greedy
        click.echo(f"sampled/greedy throughput: {sampled / greedy:.3f}")
    if "prompts" in sweeps:
        for n in _ints(prompt_counts):
            point(llm, "prompts", lambda: measure_throughput(llm, n, None, None, min_len, max_len,
                                                             seed()), num_prompts=n)
    if "rates" in sweeps:
        for r in _floats(rates):
            n = max(16, round(r * rate_duration))
            point(llm, "rates", lambda: measure_arrivals(llm, n, r, None, None, min_len, max_len,
                                                         seed()), request_rate=r)
    if "lengths" in sweeps:
        ls = _ints(lengths)
        need = 2 * max(ls) + 16
        if llm.engine.max_model_len < need:  # a second engine that holds the longest point
            del llm
            gc.collect()
            _empty_cache()
            llm = build_llm({**o, "max_model_len": need})
            meta["lengths_max_model_len"] = need
        for n in ls:
            point(llm, "lengths", lambda: measure_throughput(llm, length_prompts, n, n, 1, 1,
                                                             seed()), length=n)
    meta["total_s"] = time.perf_counter() - t0
    save()
    click.echo(f"wrote {out} ({len(records)} points, {meta['total_s']:.0f} s)")


def _empty_cache() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
