"""benchmarks/bench_serve.py against a live server on a model without a tokenizer: the stream's
chunks carry no text, yet every step's tokens arrive as chunks, so TTFT and ITL are measured."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import pathlib

import httpx
import pytest

BENCH = pathlib.Path(__file__).resolve().parents[3] / "benchmarks" / "bench_serve.py"


@pytest.fixture(scope="module")
def bare_server(start_server, bare_model_dir):
    assert not any(p.name.startswith("tokenizer") for p in bare_model_dir.iterdir())
    return start_server(path=bare_model_dir)


def test_stream_without_tokenizer_sends_each_step(bare_server):
    body = {"model": "tiny-llama", "prompt": [5, 6, 7], "max_tokens": 6, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(base_url=bare_server.url, timeout=30) as http:
        r = http.post("/v1/completions", json=body)
    assert r.status_code == 200
    lines = [x[6:] for x in r.text.splitlines() if x.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    events = [json.loads(x) for x in lines[:-1]]
    chunks = [e for e in events if e["choices"]]
    assert len(chunks) == 6 and all(c["choices"][0]["text"] == "" for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 5 + ["length"]
    assert events[-1]["usage"]["completion_tokens"] == 6


def test_bench_serve_measures_latencies(bare_server):
    spec = importlib.util.spec_from_file_location("bench_serve", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    prompts = [[(7 * i + j) % 128 for j in range(4 + i)] for i in range(4)]
    r = asyncio.run(bench.run_level(bare_server.url, "tiny-llama", prompts, [5, 6, 7, 8], 2,
                                    math.inf, 0, None))
    assert r["errors"] == 0 and r["output_tok_per_s"] > 0, json.dumps(r)
    for key in ("ttft_ms_p50", "ttft_ms_p99", "itl_ms_p50", "itl_ms_p99", "tpot_ms_mean"):
        assert math.isfinite(r[key]) and r[key] > 0, (key, r)
