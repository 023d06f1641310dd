"""Sweep the decode-attention kernel's tile (tokens per tile, warps, stages) and split count on
the shapes of the issue-15/16 workloads; prints one JSON line per point and the best per shape.

    python benchmarks/tune_decode_attention.py [--out FILE] [--quick] [--kv-cache-dtype fp8]

Contexts are uniform in [lo, hi] per sequence (the throughput workload's live KV), so GB/s is
the K and V bytes the batch really holds over the kernel time (CUDA-graph replay of 20 calls).
"""
from __future__ import annotations

import argparse
import importlib
import itertools
import json

import torch
import triton
from triton.testing import do_bench_cudagraph

mod = importlib.import_module("litevllm_triton.kernels.decode_attention")  # the module
backend = importlib.import_module("litevllm_triton.backend")
ORDER_MIN_SEQS = backend.TritonAttentionBackend.ORDER_MIN_SEQS  # the engine orders from here

# name, batch, heads, kv heads, head dim, context low, high
SHAPES = [("tinyllama_b1", 1, 32, 4, 64, 160, 160),
          ("tinyllama_b32", 32, 32, 4, 64, 128, 256),     # latency runs: 128 in, 128 out
          ("tinyllama_b128", 128, 32, 4, 64, 128, 256),
          ("tinyllama_b64", 64, 32, 4, 64, 100, 2048),
          ("tinyllama_b256", 256, 32, 4, 64, 100, 2048),
          ("llama3_b1", 1, 32, 8, 128, 160, 160),
          ("llama3_b64", 64, 32, 8, 128, 100, 2048),
          ("qwen3_b256", 256, 16, 8, 128, 100, 2048),
          ("qwen_moe_b256", 256, 16, 16, 128, 100, 2048)]


def case(b, h, hkv, d, lo, hi, max_ctx=4096, page=16, dtype=torch.bfloat16, fp8=False):
    g = torch.Generator().manual_seed(0)
    lens = torch.randint(lo, hi + 1, (b,), generator=g).to(torch.int32)
    width = max_ctx // page
    n = b * width
    k = torch.randn(n, page, hkv, d, dtype=dtype, device="cuda")
    v = torch.randn_like(k)
    if fp8:  # a float8 e4m3 cache (scales 1.0): half the bytes
        k, v = k.to(torch.float8_e4m3fn), v.to(torch.float8_e4m3fn)
    bt = torch.randperm(n, device="cuda").to(torch.int32).view(b, width)
    q = torch.randn(b, h, d, dtype=dtype, device="cuda")
    nbytes = 2 * int(lens.sum()) * hkv * d * k.element_size()
    return q, k, v, bt, lens.cuda(), nbytes


def time_point(args, splits, ordered=False):
    q, k, v, bt, sl, _ = args
    out = torch.empty_like(q)

    def fn():  # ordered: the sort kernel is timed too (the engine runs it once a step, not
        order = mod.decode_order(sl) if ordered else None  # once a layer: an upper bound)
        mod.decode_attention(q, k, v, bt, sl, q.shape[-1] ** -0.5, out=out, num_splits=splits,
                             order=order)
    fn()
    torch.cuda.synchronize()
    return do_bench_cudagraph(fn, rep=50) * 1e3  # µs


def split_counts(a, auto):
    """The split counts to time: --splits, plus the auto count (the default row needs it)."""
    chosen = {int(x) for x in a.splits.split(",")} if a.splits else {1, 2, 4, 8, 16}
    return sorted(chosen | {auto})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out")
    p.add_argument("--quick", action="store_true", help="fewer tiles")
    p.add_argument("--splits-only", action="store_true", help="the default tiles (split and one-split), every split count")
    p.add_argument("--shapes", default=None, help="comma-separated shape names")
    p.add_argument("--kv-cache-dtype", choices=("auto", "fp8"), default="auto")
    p.add_argument("--tiles", default=None, help="tiles to sweep, e.g. 128:4:3,64:4:1 "
                   "(tokens:warps:stages; overrides --quick)")
    p.add_argument("--order", choices=("auto", "off", "on", "both"), default="auto",
                   help="launch rows longest context first; auto: as the engine (>= 32 rows)")
    p.add_argument("--splits", default=None,
                   help="comma-separated split counts to sweep (default: 1, 2, 4, 8, 16 and the auto count)")
    a = p.parse_args()
    fp8 = a.kv_cache_dtype == "fp8"
    block_ns = (32, 64, 128, 256) if fp8 else (32, 64, 128)  # fp8 fits 256 at D 128
    # fp8 tiles also sit in shared memory as float16: one stage (no cp.async buffers) cuts it
    # by a third (Qwen3's 128-token tile: 100 -> 68 KB, 3 programs per SM as bf16 has)
    stages = (1, 2, 3, 4) if fp8 else (2, 3, 4)
    tiles = list(itertools.product(block_ns, (2, 4, 8), stages))
    if a.quick:
        tiles = list(itertools.product(block_ns, (4, 8), (1, 3) if fp8 else (3,)))
    if a.tiles:
        tiles = [tuple(map(int, t.split(":"))) for t in a.tiles.split(",")]
    default = (mod.BLOCK_N, mod.NUM_WARPS, mod.NUM_STAGES)
    single = mod.BLOCK_N_SINGLE  # the one-split tile; a point's tile replaces both
    if a.splits_only:
        tiles = list(dict.fromkeys([default, (single, *default[1:])]))
    f = open(a.out, "a") if a.out else None
    for name, b, h, hkv, d, lo, hi in SHAPES:
        if a.shapes and name not in a.shapes.split(","):
            continue
        args = case(b, h, hkv, d, lo, hi, fp8=fp8)
        auto = mod.num_decode_splits(b, hkv, args[3].shape[1] * 16, d)
        results = []
        orders = {"auto": (b >= ORDER_MIN_SEQS,), "off": (False,), "on": (True,),
                  "both": (False, True)}[a.order]
        for (bn, w, s), splits, ordered in itertools.product(tiles, split_counts(a, auto),
                                                             orders):
            mod.BLOCK_N, mod.NUM_WARPS, mod.NUM_STAGES = bn, w, s
            mod.BLOCK_N_SINGLE = bn if splits == 1 else single
            try:
                us = time_point(args, splits, ordered)
            except Exception as e:  # out of shared memory etc.
                print(json.dumps({"shape": name, "tile": [bn, w, s], "splits": splits,
                                  "error": str(e).splitlines()[0][:120]}), flush=True)
                continue
            row = {"shape": name, "kv_cache_dtype": a.kv_cache_dtype, "tile": [bn, w, s],
                   "splits": splits, "ordered": ordered, "auto_splits": auto,
                   "us": round(us, 2), "tb_s": round(args[5] / us / 1e6, 3),
                   "default": splits == auto and (bn, w, s) == ((single, *default[1:])
                                                                  if auto == 1 else default)
                   and ordered == (b >= ORDER_MIN_SEQS)}
            results.append(row)
            if f:
                f.write(json.dumps(row) + "\n")
        mod.BLOCK_N, mod.NUM_WARPS, mod.NUM_STAGES = default
        mod.BLOCK_N_SINGLE = single
        best = min(results, key=lambda r: r["us"])
        dflt = next((r for r in results if r["default"]), {})  # absent when --tiles omits it
        print(json.dumps({"shape": name, "best": best, "default_us": dflt.get("us"),
                          "default_tb_s": dflt.get("tb_s")}), flush=True)
        del args
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
