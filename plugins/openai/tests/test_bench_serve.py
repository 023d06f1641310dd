"""benchmarks/bench_serve.py against a live server on a model without a tokenizer: the stream's
chunks carry no text, yet every step's tokens arrive as chunks, so TTFT and ITL are measured."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import pathlib

import pytest

from conftest import Client, LiveServer, save_model

BENCH = pathlib.Path(__file__).resolve().parents[3] / "benchmarks" / "bench_serve.py"


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory):
    """A tiny random Llama saved without tokenizer files."""
    path = tmp_path_factory.mktemp("bare") / "llama"
    save_model(path, 128)
    assert not any(p.name.startswith("tokenizer") for p in path.iterdir())
    srv = LiveServer(path)
    yield srv
    srv.close()


def test_stream_without_tokenizer_sends_each_step(bare_server):
    status, events = Client(bare_server.port).stream("/v1/completions", {
        "model": "tiny-llama", "prompt": [5, 6, 7], "max_tokens": 6, "ignore_eos": True,
        "stream_options": {"include_usage": True}})
    assert status == 200 and events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    assert len(chunks) == 6 and all(c["choices"][0]["text"] == "" for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 5 + ["length"]
    assert events[-2]["usage"]["completion_tokens"] == 6


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
