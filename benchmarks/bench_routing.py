"""Prefix-aware routing against round robin on Ray Serve replicas: a multi-turn chat workload.

    python benchmarks/bench_routing.py --replicas 2 [--gpus-per-replica 0.5] -- \
        --model benchmarks/configs/tinyllama-1.1b --load-format dummy

Each of C conversations has its own system prompt; turn t sends the whole history (system
prompt, earlier user and assistant turns) plus a new user turn, as token ids, so the workload
needs no tokenizer. Conversations run concurrently, turns in order. For each router the app is
started fresh; the replicas' prefix-cache counters (tokens) give the hit rate.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import click


def engine_options(args: list[str]) -> dict:
    from litevllm.plugin_api import engine_options as decorate

    @click.command()
    @decorate
    def cmd(**o):
        return o
    return cmd.make_context("bench", list(args)).params


def workload(conversations: int, turns: int, system: int, user: int, reply: int, vocab: int,
             seed: int = 0) -> list[list[list[int]]]:
    rng = random.Random(seed)
    ids = lambda n: [rng.randrange(10, vocab) for _ in range(n)]  # noqa: E731
    out = []
    for _ in range(conversations):
        history, prompts = ids(system), []
        for _ in range(turns):
            history = history + ids(user)
            prompts.append(list(history))
            history = history + ids(reply)
        out.append(prompts)
    return out


def post(url: str, body: dict) -> tuple[float, dict]:
    req = urllib.request.Request(f"{url}/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        return time.perf_counter() - t, json.loads(r.read())


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name) and not line.startswith("#"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def run_once(url: str, convs, max_tokens: int) -> dict:
    lat: list[float] = []
    out_tokens = 0

    def chat(prompts):
        nonlocal out_tokens
        for p in prompts:
            dt, body = post(url, {"prompt": p, "max_tokens": max_tokens, "temperature": 0,
                                  "ignore_eos": True})
            lat.append(dt)
            out_tokens += body["usage"]["completion_tokens"]
    t = time.perf_counter()
    with ThreadPoolExecutor(len(convs)) as pool:
        list(pool.map(chat, convs))
    wall = time.perf_counter() - t
    time.sleep(2.5)  # replicas post their counters every second
    q = metric(url, "vllm:prefix_cache_queries_total")
    h = metric(url, "vllm:prefix_cache_hits_total")
    lat.sort()
    return {"requests": len(lat), "wall_s": round(wall, 2), "output_tok_s": round(out_tokens / wall, 1),
            "latency_p50_ms": round(1e3 * statistics.median(lat), 1),
            "latency_p99_ms": round(1e3 * lat[int(0.99 * (len(lat) - 1))], 1),
            "prefix_cache_hit_rate": round(h / q, 4) if q else None}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--gpus-per-replica", type=float, default=None)
    p.add_argument("--cpus-per-replica", type=float, default=1.0)
    p.add_argument("--conversations", type=int, default=16)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--system-len", type=int, default=512)
    p.add_argument("--turn-len", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--port", type=int, default=8321)
    p.add_argument("--routers", default="round_robin,prefix")
    p.add_argument("--json-out", default=None)
    p.add_argument("engine_args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    import ray
    from ray import serve

    from litevllm_openai.server import ServerConfig
    from litevllm_ray.launch import build
    options = engine_options([x for x in a.engine_args if x != "--"])
    convs = workload(a.conversations, a.turns, a.system_len, a.turn_len, a.max_tokens, a.vocab)
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": a.port})
    url, results = f"http://127.0.0.1:{a.port}", {}
    try:
        for routing in a.routers.split(","):
            app = build(options, ServerConfig("bench"), shutdown_timeout=5, replicas=a.replicas,
                        min_replicas=None, max_replicas=None, gpus_per_replica=a.gpus_per_replica,
                        cpus_per_replica=a.cpus_per_replica, max_waiting=None, routing=routing)
            serve.run(app, name="litevllm", route_prefix="/")
            run_once(url, [c[:1] for c in convs[:2]], 4)  # warm-up (compiles, captures)
            serve.delete("litevllm")
            serve.run(app, name="litevllm", route_prefix="/")
            results[routing] = run_once(url, convs, a.max_tokens)
            print(json.dumps({"routing": routing, "replicas": a.replicas, **results[routing]}),
                  flush=True)
            serve.delete("litevllm")
    finally:
        serve.shutdown()
        ray.shutdown()
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
