"""RMSNorm fused into the skinny GEMM (``gemv(..., norm_weight=..., residual=...)``) against
``rms_norm`` then ``gemv``, at batch 1 with each shape's tuned tile.

Each chain is one CUDA graph over weight copies that defeat the L2, PDL as the engine launches
(µs per norm + GEMV). One JSON line a shape. GPU only: python benchmarks/bench_norm_gemv.py
"""
from __future__ import annotations

import argparse
import json

import torch

from litevllm_triton.gemv_table import gemv_config
from litevllm_triton.kernels import rms_norm
from litevllm_triton.kernels._common import pdl_enabled
from litevllm_triton.kernels.gemv import gemv

SHAPES = {  # name: (weight rows, K, gated)
    "tinyllama_qkv": (2560, 2048, False), "tinyllama_gate_up": (11264, 2048, True),
    "llama3_qkv": (6144, 4096, False), "llama3_gate_up": (28672, 4096, True),
    "gemma2_qkv": (4096, 2304, False), "gemma2_gate_up": (18432, 2304, True),
}


def time_graph(fn, copies: int, reps: int = 10) -> float:
    for i in range(copies):
        fn(i)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(copies):
            fn(i)
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(5):
        start.record()
        for _ in range(reps):
            graph.replay()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) * 1e3 / (reps * copies))
    return best


def run(name: str, m: int) -> dict:
    rows, k, gated = SHAPES[name]
    dt = torch.bfloat16
    copies = max(4, -(-400_000_000 // (rows * k * 2)))
    ws = [torch.randn(rows, k, dtype=dt, device="cuda") * 0.02 for _ in range(copies)]
    x = torch.randn(m, k, dtype=dt, device="cuda")
    res = torch.randn(m, k, dtype=dt, device="cuda")
    g = torch.rand(k, dtype=dt, device="cuda") + 0.5
    act = "silu" if gated else None
    cfg = gemv_config("gated" if gated else "linear", m, rows // 2 if gated else rows, k,
                      x.device)
    out = dict(shape=name, m=m, cfg=cfg)
    if cfg is None or cfg["SPLIT_K"] != 1:
        return dict(out, skipped="no one-split Triton tile for this shape")
    pdl = pdl_enabled(x.device)

    def two(i):
        normed, _ = rms_norm(x, g, 1e-5, res)
        return gemv(normed, ws[i], None, cfg, act, pdl=pdl)

    def fused(i):
        return gemv(x, ws[i], None, cfg, act, pdl=pdl, norm_weight=g, eps=1e-5, residual=res)[0]

    out["two_ops_us"] = time_graph(two, copies)
    out["fused_us"] = time_graph(fused, copies)
    out["gemv_only_us"] = time_graph(lambda i: gemv(x, ws[i], None, cfg, act, pdl=pdl), copies)
    err = (fused(0).float() - two(0).float()).abs().max().item()
    out["max_abs_diff"] = err
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--m", default="1")
    ap.add_argument("--out")
    a = ap.parse_args()
    sink = open(a.out, "a") if a.out else None
    for name in a.shapes.split(","):
        for m in map(int, a.m.split(",")):
            line = json.dumps(run(name, m))
            print(line, flush=True)
            if sink:
                sink.write(line + "\n")


if __name__ == "__main__":
    main()
