"""Tune the Triton fused-MoE kernel's block sizes for one MoE shape on this GPU.

    python benchmarks/tune_fused_moe.py --config benchmarks/configs/qwen3-30b-a3b/config.json
    python benchmarks/tune_fused_moe.py --experts 60 --top-k 4 --hidden 2048 --inter 1408 --quick

For each token count and each BLOCK_M (it fixes the row layout both GEMMs share), it times every
tile config of the gate_up GEMM and of the down GEMM on their own (CUDA-graph replay, as the
engine runs decode), keeps the BLOCK_M with the fastest pair, and writes it into
``plugins/triton/litevllm_triton/fused_moe_configs/E=..,N=..,K=..,device_name=...json``, merged
with the entries already there. Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
import triton
from triton.testing import do_bench

from litevllm_triton.kernels.fused_moe import (config_file, device_name, moe_gemm,
                                               route_and_align)

TOKENS = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 2048, 4096]


def block_ms(m: int, experts: int, top_k: int):
    """BLOCK_M up to twice the rows an expert expects (tl.dot needs 16); register tiles of
    1-8 rows too while an expert expects at most 4."""
    rows = max(1, m * top_k // experts)
    small = [bm for bm in (1, 2, 4, 8) if bm <= 2 * triton.next_power_of_2(rows)] \
        if -(-m * top_k // experts) <= 4 else []
    return small + [bm for bm in (16, 32, 64, 128)
                    if bm <= max(16, 2 * triton.next_power_of_2(rows))]


def tiles(m: int, quick: bool, bm: int = 16, gated: bool = False):
    if bm < 16:  # register tiles, as the skinny GEMM's (bench_gemv.py): few columns, long K
        for bn, bk in itertools.product((2, 4, 8, 16), (256, 512, 1024, 2048)):
            if bm * bn * bk * (2 if gated else 1) <= 8192:
                for st in (3,) if quick else (2, 3, 4):
                    yield dict(BLOCK_N=bn, BLOCK_K=bk, GROUP_M=1, num_warps=4, num_stages=st)
        return
    space = dict(BLOCK_N=[16, 32, 64, 128] + ([] if quick else [256]),
                 BLOCK_K=[64, 128] + ([] if quick else [256]),
                 GROUP_M=[1] if m <= 64 else [1, 16], num_warps=[4] if quick else [4, 8],
                 num_stages=[3, 4, 5] if quick else [2, 3, 4, 5])
    for values in itertools.product(*space.values()):
        yield dict(zip(space, values))


def bench(fn) -> float:
    fn()  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return do_bench(graph.replay, warmup=10, rep=50, return_mode="median")


PRECOMPILER = None  # engine/precompile.py's process pool, set by main()


def best_tile(fn, m, quick, bm, gated):
    """(ms, tile) of the fastest tile for ``fn(tile)``; tiles that fail to compile are skipped."""
    results = []
    if PRECOMPILER is not None:  # every tile compiled in parallel processes first
        PRECOMPILER.compile_ahead(lambda t=t: fn(t) for t in tiles(m, quick, bm, gated))
    for tile in tiles(m, quick, bm, gated):
        try:
            results.append((bench(lambda: fn(tile)), tile))
        except Exception:  # e.g. out of shared memory for this tile shape
            pass
    return min(results, key=lambda r: r[0])


def tune(m, w13, w2, top_k, quick):
    e, h, inter = w13.shape[0], w13.shape[2], w2.shape[2]
    hidden = torch.randn(m, h, device="cuda", dtype=w13.dtype)
    logits = torch.randn(m, e, device="cuda", dtype=w13.dtype)
    act = torch.randn(m * top_k, inter, device="cuda", dtype=w13.dtype)
    out = torch.empty(m * top_k, h, device="cuda", dtype=w13.dtype)
    best = None
    for bm in block_ms(m, e, top_k):
        weights, rows, block_expert = route_and_align(logits, top_k, False, bm)
        up = best_tile(lambda t: moe_gemm(hidden, w13, act, rows, block_expert, weights, bm, t,
                                          True, 0, top_k), m, quick, bm, True)
        down = best_tile(lambda t: moe_gemm(act, w2, out, rows, block_expert, weights, bm, t,
                                            False), m, quick, bm, False)
        if best is None or up[0] + down[0] < best[0]:
            best = (up[0] + down[0], dict(BLOCK_M=bm, up=up[1], down=down[1]))
    return best


def dump(configs: dict) -> str:
    """One line per token count."""
    items = sorted(configs.items(), key=lambda kv: int(kv[0]))
    return "{\n" + ",\n".join(f' "{m}": {json.dumps(c)}' for m, c in items) + "\n}\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="HF config.json of an MoE model (or give the sizes)")
    p.add_argument("--experts", type=int)
    p.add_argument("--top-k", type=int)
    p.add_argument("--hidden", type=int)
    p.add_argument("--inter", type=int, help="moe_intermediate_size")
    p.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--quick", action="store_true", help="a smaller search space")
    p.add_argument("--out-dir", help="where to write the JSON (default: the plugin's folder)")
    args = p.parse_args()
    if args.config:
        cfg = json.loads(Path(args.config).read_text())
        args.experts, args.top_k = cfg["num_experts"], cfg["num_experts_per_tok"]
        args.hidden, args.inter = cfg["hidden_size"], cfg["moe_intermediate_size"]
    if None in (args.experts, args.top_k, args.hidden, args.inter):
        p.error("give --config or all of --experts --top-k --hidden --inter")
    e, h, inter = args.experts, args.hidden, args.inter
    dtype = getattr(torch, args.dtype)
    w13 = torch.randn(e, 2 * inter, h, device="cuda", dtype=dtype) / h ** 0.5
    w2 = torch.randn(e, h, inter, device="cuda", dtype=dtype) / inter ** 0.5
    path = config_file(e, inter, h, device_name(w13.device))
    if args.out_dir:
        path = Path(args.out_dir) / path.name
    found = json.loads(path.read_text()) if path.is_file() else {}
    global PRECOMPILER
    from litevllm.engine.precompile import Precompiler
    PRECOMPILER = Precompiler.for_sweep()
    for m in map(int, args.tokens.split(",")):
        t0 = time.perf_counter()
        ms, cfg = tune(m, w13, w2, args.top_k, args.quick)
        found[str(m)] = cfg
        print(f"M={m:5d}: {ms * 1e3:8.1f} us (GEMMs)  {cfg}  ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(found))  # after every M, so a partial run keeps its results
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
