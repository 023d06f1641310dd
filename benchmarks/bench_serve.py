"""Serving benchmark: drives `lite serve` over HTTP (streamed /v1/completions, random token-id
prompts) with a burst or Poisson load at several concurrency levels, and reports TTFT,
inter-token latency (p50/p99), TPOT and output tok/s per level.

    # start the server itself (extra `lite serve` options after --serve-args)
    python benchmarks/bench_serve.py --model ./TinyLlama-1.1B-Chat --concurrency 1,16,64,256 \
        --serve-args "--max-num-seqs 256" --json-out results/serve.json
    # or measure a running server
    python benchmarks/bench_serve.py --url http://127.0.0.1:8000 --vocab-size 32000

The workload matches `lite bench throughput --min-len 100 --max-len 1024`: input and output
lengths uniform in [min_len, max_len], outputs forced to full length (ignore_eos). Each level
runs min(num_prompts, max(16, 4 x concurrency)) prompts (all of them with --full).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import random
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time

import httpx


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))]


async def one_request(http, model, prompt, max_tokens):
    """(ttft, [chunk gaps], latency, output tokens) of one streamed completion."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    ttft, last, gaps, tokens = None, None, [], 0
    async with http.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
        replica = r.headers.get("x-litevllm-replica")  # Ray Serve replicas name themselves
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"]["message"])
            now = time.perf_counter()
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            # every chunk with a choice is one engine step's new tokens (or the finish), its
            # text possibly empty (no tokenizer, held-back bytes); the usage chunk has none
            if event["choices"]:
                if ttft is None:
                    ttft = now - start
                else:
                    gaps.append(now - last)
                last = now
    return ttft, gaps, time.perf_counter() - start, tokens, replica


async def run_level(url, model, prompts, out_lens, concurrency, rate, seed, api_key):
    rng = random.Random(seed)
    sem = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    results, errors = [], []
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits, headers=headers) as http:
        async def task(p, n):
            async with sem:
                try:
                    results.append(await one_request(http, model, p, n))
                except Exception as e:
                    errors.append(str(e))
        tasks, start = [], time.perf_counter()
        for p, n in zip(prompts, out_lens):
            tasks.append(asyncio.ensure_future(task(p, n)))
            if math.isfinite(rate):
                await asyncio.sleep(rng.expovariate(rate))  # Poisson arrivals
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    ttft = [r[0] for r in results if r[0] is not None]
    gaps = [g for r in results for g in r[1]]
    tpot = [(r[2] - r[0]) / (r[3] - 1) for r in results if r[0] is not None and r[3] > 1]
    out_tokens = sum(r[3] for r in results)
    return {"concurrency": concurrency, "num_prompts": len(prompts), "errors": len(errors),
            "elapsed_s": elapsed, "output_tok_per_s": out_tokens / elapsed,
            "total_tok_per_s": (out_tokens + sum(len(p) for p in prompts)) / elapsed,
            "requests_per_s": len(results) / elapsed,
            "ttft_ms_p50": pct(ttft, 50) * 1e3, "ttft_ms_p99": pct(ttft, 99) * 1e3,
            "itl_ms_p50": pct(gaps, 50) * 1e3, "itl_ms_p99": pct(gaps, 99) * 1e3,
            "tpot_ms_mean": statistics.mean(tpot) * 1e3 if tpot else float("nan"),
            "replicas": dict(collections.Counter(r[4] for r in results if r[4])),
            "first_error": errors[0] if errors else None}


def start_server(model, serve_args, port):
    cmd = [sys.executable, "-m", "litevllm.cli", "serve", "--model", model, "--port", str(port),
           "--served-model-name", "bench", *shlex.split(serve_args)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stderr:
        sys.stderr.write(line)
        m = re.search(r"http://[^:]+:(\d+)/v1", line)
        if m:  # keep draining the server's log, or a full pipe would stall it
            threading.Thread(target=lambda: [sys.stderr.write(x) for x in proc.stderr],
                             daemon=True).start()
            return proc, f"http://127.0.0.1:{m.group(1)}"
    raise SystemExit(f"lite serve exited with {proc.wait()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running server (else --model starts one)")
    ap.add_argument("--model", help="checkpoint to serve with `lite serve`")
    ap.add_argument("--serve-args", default="", help="extra `lite serve` options")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--served-model-name", default=None)
    ap.add_argument("--api-key", default=os.environ.get("LITEVLLM_API_KEY"))
    ap.add_argument("--vocab-size", type=int, default=None,
                    help="for random prompts (default: from --model's config.json, else 32000)")
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--min-len", type=int, default=100)
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--concurrency", default="1,16,64,256")
    ap.add_argument("--request-rate", type=float, default=math.inf,
                    help="Poisson arrivals per second (default inf: a burst)")
    ap.add_argument("--full", action="store_true", help="every level runs all prompts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out")
    args = ap.parse_args()
    if not (args.url or args.model):
        ap.error("give --url or --model")
    vocab = args.vocab_size
    if vocab is None and args.model and os.path.isfile(os.path.join(args.model, "config.json")):
        with open(os.path.join(args.model, "config.json")) as f:
            vocab = json.load(f)["vocab_size"]
    vocab = vocab or 32000
    proc, url, model = None, args.url, args.served_model_name
    if args.model and not url:
        proc, url = start_server(args.model, args.serve_args, args.port)
        model = "bench"
    try:
        rng = random.Random(args.seed)
        lens = [(rng.randint(args.min_len, args.max_len), rng.randint(args.min_len, args.max_len))
                for _ in range(args.num_prompts)]
        prompts = [[rng.randrange(vocab) for _ in range(n)] for n, _ in lens]
        out_lens = [m for _, m in lens]
        # warm-up: compiles kernels and CUDA graphs outside the timed levels
        asyncio.run(run_level(url, model, prompts[:16], [20] * 16, 16, math.inf, 0, args.api_key))
        report = []
        for c in (int(x) for x in args.concurrency.split(",")):
            n = args.num_prompts if args.full else min(args.num_prompts, max(16, 4 * c))
            r = asyncio.run(run_level(url, model, prompts[:n], out_lens[:n], c,
                                      args.request_rate, args.seed, args.api_key))
            report.append(r)
            print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in r.items()), flush=True)
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump({"model": args.model or url, "request_rate": args.request_rate,
                           "levels": report}, f, indent=2)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)


if __name__ == "__main__":
    main()
