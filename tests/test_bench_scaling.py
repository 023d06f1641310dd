"""Scaling tooling on a tiny model: Poisson arrivals, the sweep driver, the plot script."""
import importlib.util
import itertools
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from litevllm import LLM
from litevllm.bench import request_params
from litevllm.bench_arrivals import lengths, measure_arrivals, percentile
from litevllm.cli import cli

BENCH = Path(__file__).parent.parent / "benchmarks"


def _module(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_percentile():
    assert percentile([], 50) == 0.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(range(101)), 99) == 99


def test_poisson_arrivals_serve_every_token_after_its_arrival(llama_dir):
    llm = LLM(str(llama_dir), max_model_len=64)
    rate, n = 40.0, 5
    r = measure_arrivals(llm, n, rate, min_len=3, max_len=10, seed=1, warmup=False)
    # replay the function's draws: lengths, prompt tokens, then the arrival gaps
    rng = random.Random(1)
    ins, outs = lengths(rng, n, None, None, 3, 10)
    for _ in range(sum(ins)):
        rng.randrange(llm.engine.hf_config.vocab_size)
    last = list(itertools.accumulate([0.0] + [rng.expovariate(rate) for _ in range(n - 1)]))[-1]
    assert r["output_tok_per_s"] * r["elapsed_s"] == pytest.approx(sum(outs))
    assert 0 < r["ttft_ms_p50"] <= r["ttft_ms_p99"]
    assert 0 <= r["itl_ms_p50"] <= r["itl_ms_p99"]
    assert r["kv_peak_gib"] > 0 and not llm.engine.has_unfinished_requests()
    assert r["elapsed_s"] >= last


def test_bench_throughput_request_rate_json(llama_dir, tmp_path):
    out = tmp_path / "rate.json"
    r = CliRunner().invoke(cli, ["bench", "throughput", "--model", str(llama_dir), "--num-prompts",
                                 "4", "--min-len", "3", "--max-len", "8", "--request-rate", "50",
                                 "--no-progress", "--json-out", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["request_rate"] == 50 and data["ttft_ms_p99"] >= data["ttft_ms_p50"] > 0
    assert "requests:" not in r.output  # no progress bar off a terminal
    r = CliRunner().invoke(cli, ["bench", "throughput", "--model", str(llama_dir),
                                 "--request-rate", "0"])
    assert r.exit_code == 2 and "--request-rate" in r.output


def test_sweep_driver_and_plots(llama_dir, tmp_path):
    out = tmp_path / "scaling.json"
    r = CliRunner().invoke(_module("bench_scaling").main, [
        "--model", str(llama_dir), "--max-model-len", "128", "--prompt-counts", "2,4",
        "--lengths", "16,64", "--length-prompts", "2", "--rates", "100", "--rate-duration", "0.05",
        "--sampling-prompts", "3", "--min-len", "20", "--max-len", "40", "--label", "tiny",
        "--out", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    key = {"prompts": "num_prompts", "lengths": "length", "rates": "request_rate",
           "sampling": "sampling"}
    points = {(rec["sweep"], rec[key[rec["sweep"]]]) for rec in data["records"]}
    assert points == {("prompts", 2), ("prompts", 4), ("lengths", 16), ("lengths", 64),
                      ("rates", 100), ("sampling", "greedy"), ("sampling", "sampled")}
    assert data["meta"]["sampled_over_greedy"] > 0
    assert data["meta"]["lengths_max_model_len"] == 144  # a second engine for 64 + 64 tokens
    assert all(rec["output_tok_per_s"] > 0 and rec["kv_peak_gib"] > 0 for rec in data["records"])
    # every point draws prompts of its own: none is served from an earlier point's prefix cache
    assert all(rec.get("input_tokens_cached", 0) == 0 for rec in data["records"])
    assert "wrote" in r.output and "ttft p50/p99" in r.output

    # one sweep file plus a bare `lite bench throughput` result (a point of the prompts curve)
    bare = tmp_path / "cli.json"
    bare.write_text(json.dumps({"model": "x/other", "num_prompts": 8, "output_tok_per_s": 9.0,
                                "peak_memory_gib": 1.0}))
    plots = _module("plot_scaling")
    written = plots.plot([out, bare], tmp_path / "plots")
    assert sorted(p.name for p in written) == ["scaling_length.png", "scaling_prompts.png",
                                              "scaling_rate.png"]
    assert all(p.stat().st_size > 10_000 for p in written)
    assert set(plots.series([out, bare])["prompts"]) == {"tiny", "other"}


def test_bench_throughput_sampled(llama_dir, tmp_path):
    from litevllm.bench import request_params
    out = tmp_path / "sampled.json"
    r = CliRunner().invoke(cli, ["bench", "throughput", "--model", str(llama_dir), "--num-prompts",
                                 "3", "--min-len", "3", "--max-len", "8", "--temperature", "0.6",
                                 "--top-p", "0.9", "--no-progress", "--json-out", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["temperature"] == 0.6 and data["top_p"] == 0.9 and data["output_tok_per_s"] > 0
    a, b = request_params(0, 5, 1, 0.6, 0.9), request_params(1, 5, 1, 0.6, 0.9)
    assert a.seed != b.seed and a.top_p == 0.9 and request_params(0, 5).seed is None
    r = CliRunner().invoke(cli, ["bench", "throughput", "--model", str(llama_dir), "--top-p", "0"])
    assert r.exit_code == 2 and "--top-p" in r.output


def _record_generate(llm):
    calls = []
    real = llm.generate

    def generate(prompts, params=None, **kw):
        calls.append(params if isinstance(params, list) else [params] * len(prompts))
        return real(prompts, params, **kw)
    llm.generate = generate
    return calls


def test_warm_ups_sample_as_their_runs_do(llama_dir):
    """The untimed warm-ups use the run's sampling (so its kernels compile outside the timing),
    with seeds of their own; ``warmup=False`` runs none."""
    from litevllm.bench import measure_throughput
    llm = LLM(str(llama_dir), max_model_len=64)
    calls = _record_generate(llm)
    measure_throughput(llm, 3, None, None, 3, 8, temperature=0.7, top_p=0.9)
    warm, timed = calls
    assert {(p.temperature, p.top_p, p.max_tokens) for p in warm} == {(0.7, 0.9, 20)}
    assert not {p.seed for p in warm} & {p.seed for p in timed}
    calls.clear()
    measure_throughput(llm, 3, None, None, 3, 8, warmup=False)
    assert len(calls) == 1
    calls.clear()
    measure_arrivals(llm, 3, 50.0, min_len=3, max_len=8,
                     params_for=lambda i, n: request_params(i, n, 0, 0.5, 0.8))
    assert {(p.temperature, p.top_p) for p in calls[0]} == {(0.5, 0.8)}
