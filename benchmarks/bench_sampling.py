"""GPU time of one sampling step: the torch reference ``sample`` op (sort, softmax, cumsum,
scatter, noise) against the Triton plugin's fused one, with greedy argmax and the
temperature-only path for scale, plus how often the two disagree.

    python benchmarks/bench_sampling.py --out sampling.jsonl

Logits are Gaussian with a per-row scale from flat to peaky (the spread the rejection rounds
depend on). Times are medians from triton.testing.do_bench. Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import json

import torch
from triton.testing import do_bench

from litevllm.ops import torch_ops as ref
from litevllm_triton.kernels.sampling import sample as fused

CASES = {   # name: (top_k, top_p, min_p); "temperature": would the fused op beat the eager path?
    "temperature": (0, 1.0, 0.0),
    "top_p0.9": (0, 0.9, 0.0),
    "top_k50": (50, 1.0, 0.0),
    "min_p0.05": (0, 1.0, 0.05),
    "k50_p0.9_m0.01": (50, 0.9, 0.01),
}


def ms(fn) -> float:
    return do_bench(fn, warmup=10, rep=100, return_mode="median")


def run(b: int, v: int, scale: float, name: str, filters, temp: float = 0.6) -> dict:
    g = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.randn(b, v, device="cuda", generator=g) * torch.linspace(
        0.5, scale, b, device="cuda")[:, None]
    top_k, top_p, min_p = filters
    full = lambda x, dt=torch.float32: torch.full((b,), x, dtype=dt, device="cuda")
    seeds = torch.arange(b, device="cuda") * 7919
    steps = torch.zeros(b, dtype=torch.int64, device="cuda")
    args = (logits, full(temp), full(top_k, torch.int64), full(top_p), full(min_p),
            full(False, torch.bool), seeds, steps)
    draws = [(*args[:-1], steps + j) for j in range(8)]
    mismatch = sum(int((fused(*a) != ref.sample(*a)).sum()) for a in draws)
    return {"b": b, "v": v, "logit_scale": scale, "case": name,
            "torch_ms": ms(lambda: ref.sample(*args)), "fused_ms": ms(lambda: fused(*args)),
            "temperature_only_ms": ms(lambda: ref.gumbel_max(logits / args[1][:, None],
                                                             seeds, steps)),
            "greedy_ms": ms(lambda: logits.argmax(-1)), "rows_differing_of_8b": mismatch}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="256x32000,256x151936,8x151936")
    ap.add_argument("--scales", default="2,8", help="largest per-row logit std (flat -> peaky)")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--out")
    a = ap.parse_args()
    out = open(a.out, "a") if a.out else None
    for shape in a.shapes.split(","):
        b, v = map(int, shape.split("x"))
        for scale in map(float, a.scales.split(",")):
            for name in a.cases.split(","):
                r = run(b, v, scale, name, CASES[name])
                r["speedup"] = r["torch_ms"] / r["fused_ms"]
                line = json.dumps({k: round(x, 4) if isinstance(x, float) else x
                                   for k, x in r.items()})
                print(line, flush=True)
                if out:
                    print(line, file=out, flush=True)


if __name__ == "__main__":
    main()
