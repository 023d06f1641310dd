"""Sweep the prefill-attention kernel's tile (BLOCK_M rows, BLOCK_N keys, warps, stages) on the
issue-15/16 prefill shapes; prints one JSON line per point and the best per shape.

    python benchmarks/tune_prefill_attention.py [--out FILE] [--shapes a,b] [--tiles 128:64:8:3]
        [--kv-cache-dtype fp8]

Each shape is a batch of sequences laid out in a paged bf16 (or float8 e4m3) cache as the engine
does (random block order): prompts with no cached context, or (``*_mixed``) one prompt chunk
beside the decode rows of a throughput run's step (one query token over a context U[100, 1024]).
TFLOP/s counts the causal part of QK^T and PV (4 * visible query-key pairs * heads * head dim);
times are CUDA-graph replays (do_bench_cudagraph).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import json

import torch
from triton.testing import do_bench_cudagraph

mod = importlib.import_module("litevllm_triton.kernels.prefill_attention")

_g = torch.Generator().manual_seed(0)
_DECODES = [(1, int(n)) for n in torch.randint(100, 1025, (255,), generator=_g)]
# name, (query length, sequence length) per sequence, heads, kv heads, head dim
SHAPES = [("tinyllama_2048", [(2048, 2048)], 32, 4, 64),
          ("tinyllama_4x512", [(512, 512)] * 4, 32, 4, 64),
          ("tinyllama_mixed", [(2048, 2048)] + _DECODES, 32, 4, 64),
          ("qwen3_2048", [(2048, 2048)], 16, 8, 128),
          ("qwen3_mixed", [(2048, 2048)] + _DECODES, 16, 8, 128),
          ("llama3_2048", [(2048, 2048)], 32, 8, 128),
          ("qwen_moe_2048", [(2048, 2048)], 16, 16, 128)]


def case(seqs, h, hkv, d, page=16, dtype=torch.bfloat16, fp8=False):
    """q, caches, block tables, query_start_loc, seq_lens and the causal FLOP count."""
    qlens = [q for q, _ in seqs]
    width = -(-max(L for _, L in seqs) // page)
    n = len(seqs) * width
    k = torch.randn(n, page, hkv, d, dtype=dtype, device="cuda")
    v = torch.randn_like(k)
    if fp8:  # scales 1.0
        k, v = k.to(torch.float8_e4m3fn), v.to(torch.float8_e4m3fn)
    bt = torch.randperm(n, device="cuda").to(torch.int32).view(len(seqs), width)
    starts = torch.tensor([0] + list(itertools.accumulate(qlens)), dtype=torch.int32,
                          device="cuda")
    q = torch.randn(sum(qlens), h, d, dtype=dtype, device="cuda")
    pairs = sum(ql * (L - ql) + ql * (ql + 1) // 2 for ql, L in seqs)
    lens = torch.tensor([L for _, L in seqs], dtype=torch.int32, device="cuda")
    return q, k, v, bt, starts, lens, 4 * pairs * h * d, max(qlens)


@contextlib.contextmanager
def tile(cfg):
    """Every launch in the block takes ``cfg`` = (BLOCK_M, BLOCK_N, warps, stages)."""
    real = mod._config
    mod._config = lambda *a, **k: cfg
    try:
        yield
    finally:
        mod._config = real


def time_point(args, cfg=None):
    q, k, v, bt, starts, lens, _, max_q = args
    out = torch.empty_like(q)

    def fn():
        mod.prefill_attention(q, k, v, bt, starts, lens, max_q, q.shape[-1] ** -0.5, out=out)
    with tile(cfg) if cfg else contextlib.nullcontext():
        fn()
        torch.cuda.synchronize()
        return do_bench_cudagraph(fn, rep=50) * 1e3  # µs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out")
    p.add_argument("--shapes", default=None, help="comma-separated shape names")
    p.add_argument("--tiles", default=None, help="tiles to sweep, e.g. 128:64:8:3,256:64:8:2 "
                   "(BLOCK_M:BLOCK_N:warps:stages)")
    p.add_argument("--kv-cache-dtype", choices=("auto", "fp8"), default="auto")
    a = p.parse_args()
    fp8 = a.kv_cache_dtype == "fp8"
    tiles = list(itertools.product((64, 128, 256), (32, 64, 128), (4, 8), (2, 3, 4)))
    if a.tiles:
        tiles = [tuple(map(int, t.split(":"))) for t in a.tiles.split(",")]
    f = open(a.out, "a") if a.out else None
    from litevllm.engine.precompile import Precompiler
    pool = Precompiler.for_sweep()
    for name, seqs, h, hkv, d in SHAPES:
        if a.shapes and name not in a.shapes.split(","):
            continue
        args = case(seqs, h, hkv, d, fp8=fp8)
        group = h // hkv
        ok = [t for t in tiles if t[0] >= group and t[0] % group == 0]
        if pool is not None:  # compile every tile in parallel processes first
            def launch(t):
                with tile(t):
                    q, k, v, bt, starts, sl, _, max_q = args
                    mod.prefill_attention(q, k, v, bt, starts, sl, max_q, d ** -0.5)
            pool.compile_ahead(lambda t=t: launch(t) for t in ok)
        default_us = time_point(args)
        default = mod._config(mod.padded_head_dim(d), group, args[7], fp8=fp8)
        results = []
        for t in ok:
            try:
                us = time_point(args, t)
            except Exception as e:  # out of shared memory etc.
                print(json.dumps({"shape": name, "tile": t, "error": str(e).splitlines()[0][:120]}),
                      flush=True)
                continue
            row = {"shape": name, "kv_cache_dtype": a.kv_cache_dtype, "tile": list(t),
                   "us": round(us, 2),
                   "tflops": round(args[6] / us / 1e6, 1), "default": t == default}
            results.append(row)
            if f:
                f.write(json.dumps(row) + "\n")
        best = min(results, key=lambda r: r["us"])
        print(json.dumps({"shape": name, "kv_cache_dtype": a.kv_cache_dtype, "best": best, "default": list(default),
                          "default_us": round(default_us, 2),
                          "default_tflops": round(args[6] / default_us / 1e6, 1)}), flush=True)
        del args
        torch.cuda.empty_cache()
    if pool is not None:
        pool.close()


if __name__ == "__main__":
    main()
