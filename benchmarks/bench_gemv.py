"""Sweep the Triton skinny GEMM (plugins/triton/.../kernels/gemv.py) against cuBLAS on this GPU.

    python benchmarks/bench_gemv.py --out results/gemv.jsonl --table gemv_table.json
    LITEVLLM_GEMV=0 python benchmarks/bench_gemv.py --engine tinyllama-1.1b   # decode ms/step

For each weight shape and row count M (1, 2, 4, ..., 256) it times cuBLAS (``F.linear``; gated
shapes: ``F.linear`` + the Triton ``silu_and_mul``, today's path) and every candidate tile, each
as a CUDA graph of back-to-back calls over enough weight copies to defeat the L2 cache (the
engine's decode situation), checks each candidate against ``F.linear`` in float32. Candidates
launch with programmatic dependent launch where the engine does (``pdl_enabled``); the best one
is timed again without it. ``--table`` merges the winners (``null`` where cuBLAS stays faster)
into that file, in the format ``litevllm_triton.gemv_table`` reads. ``--engine CONFIG`` instead
measures decode at ``--batches`` (default 1,32) of a benchmarks/configs model with dummy weights (set
``LITEVLLM_GEMV=0`` / ``LITEVLLM_PDL=0`` for the baselines). Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

from litevllm_triton.gemv_table import M_BUCKETS, table_key
from litevllm_triton.kernels._common import pdl_enabled
from litevllm_triton.kernels.act_and_mul import silu_and_mul
from litevllm_triton.kernels.gemv import gemv

# (name, output rows of W (gated: 2I), K, gated)
SHAPES = {
    "tinyllama": [("qkv", 2560, 2048, False), ("o", 2048, 2048, False),
                  ("gate_up", 11264, 2048, True), ("gate_up", 11264, 2048, False),
                  ("down", 2048, 5632, False), ("lm_head", 32000, 2048, False)],
    "llama3-8b": [("qkv", 6144, 4096, False), ("o", 4096, 4096, False),
                  ("gate_up", 28672, 4096, True), ("down", 4096, 14336, False),
                  ("lm_head", 128256, 4096, False)],
    "gemma-2-2b": [("qkv", 4096, 2304, False), ("o", 2304, 2048, False),
                   ("gate_up", 18432, 2304, True), ("down", 2304, 9216, False),
                   ("lm_head", 256000, 2304, False)],
    # Qwen1.5-MoE's dense shapes (its shared expert shares TinyLlama's gate_up and down)
    "qwen1.5-moe": [("qkv", 6144, 2048, False), ("o", 2048, 2048, False),
                    ("router", 64, 2048, False),  # 60 experts, the shared gate, padding
                    ("lm_head", 151936, 2048, False)],
}
L2_DEFEAT_BYTES = 320 << 20


def candidates(m: int, n: int, k: int, gated: bool, wide: bool = False):
    """Tiles worth timing for M rows: tl.dot tiles (BM 16) always, register tiles for M <= 4,
    taller tl.dot tiles (BM 32, 64) past 16 rows, swapped W x^T tiles past 8 rows, only
    64/128-row blocks (plain and swapped) past 64 rows; split-K counts that give 1-16 programs per SM
    (132 SMs). ``wide`` adds 8-warp tiles (twice the register tile, 2 or 4 stages) and 4-stage
    tl.dot tiles."""
    cols = n // 2 if gated else n
    stages = (3, 4, 5) if wide else (3, 5)
    tiles = [dict(DOT=True, BM=16, BN=bn, BK=bk, num_stages=st, num_warps=4)
             for bn in (16, 32, 64) for bk in (128, 256) for st in stages] if m <= 64 else []
    if m > 64:  # decode batches of 65..256 rows: 64/128-row blocks, plain and swapped
        tiles += [dict(DOT=True, SWAP=swap, BM=bm, BN=bn, BK=bk, num_stages=st, num_warps=warps)
                  for swap in (False, True) for bm in (64, 128) for bn in (64, 128)
                  for bk in (64, 128) for st in (3, 4)
                  for warps in ((8,) if bm * bn > 64 * 64 else (4,))]
    elif m > 16:
        tiles += [dict(DOT=True, BM=bm, BN=bn, BK=bk, num_stages=st, num_warps=warps)
                  for bm in (32, 64) if bm <= triton.next_power_of_2(m)
                  for bn in (32, 64, 128) for bk in (64, 128) for st in (3, 4)
                  for warps in ((4, 8) if bm * bn >= 64 * 64 else (4,))]
    if 8 < m <= 64:  # W x^T: the weight rows on the MMA's M side (wgmma needs 64)
        tiles += [dict(DOT=True, SWAP=True, BM=max(16, triton.next_power_of_2(m)), BN=bn, BK=bk,
                       num_stages=st, num_warps=4)
                  for bn in (64, 128) for bk in (64, 128, 256) for st in (3, 4, 5)]
    if m <= 4:
        bm = triton.next_power_of_2(m)
        for warps in (4, 8) if wide else (4,):
            tiles += [dict(DOT=False, BM=bm, BN=bn, BK=bk, num_stages=st, num_warps=warps)
                      for bn in (1, 2, 4, 8, 16) for bk in (256, 512, 1024, 2048)
                      for st in ((2, 4) if wide and warps == 8 else (3,))
                      if bm * bn * bk * (2 if gated else 1) <= 2048 * warps
                      and (wide or bn > 1 and bk < 2048)]
    for t in tiles:
        splits = [s for s in (1, 2, 4, 8, 16) if k // s >= t["BK"]]
        progs = {s: triton.cdiv(cols, t["BN"]) * s for s in splits}
        # tiny shapes (a router, a shared-expert gate) cannot fill 100 programs: most split
        keep = [s for s in splits if 100 <= progs[s] <= 132 * 16]
        if not keep and splits and progs[splits[-1]] < 100:
            keep = splits[-1:]
        for split in keep:
            yield dict(t, SPLIT_K=split)


def time_graph(fn, copies: int, reps: int = 10) -> float:
    """Microseconds per call of ``fn(i)`` replayed as one graph over ``copies`` weights."""
    for i in range(copies):  # compile and warm outside the capture
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
    for _ in range(3):
        start.record()
        for _ in range(reps):
            graph.replay()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) * 1e3 / (reps * copies))
    return best


PRECOMPILER = None  # engine/precompile.py's process pool, set by main()


def copy_bandwidth() -> float:
    a = torch.empty(1 << 28, dtype=torch.float32, device="cuda")  # 1 GiB
    b = torch.empty_like(a)
    us = time_graph(lambda i: b.copy_(a), 4)
    return 2 * a.numel() * 4 / us / 1e6  # TB/s, read + write


def sweep_shape(model, name, rows, k, gated, m, out, wide=False):
    dt = torch.bfloat16
    nbytes = rows * k * 2
    copies = max(2, -(-L2_DEFEAT_BYTES // nbytes))
    ws = [torch.randn(rows, k, dtype=dt, device="cuda") * 0.02 for _ in range(copies)]
    x = torch.randn(m, k, dtype=dt, device="cuda")
    act = "silu" if gated else None
    if gated:
        ref_fn = lambda i: silu_and_mul(F.linear(x, ws[i]))  # noqa: E731
    else:
        ref_fn = lambda i: F.linear(x, ws[i])  # noqa: E731
    cublas = time_graph(ref_fn, copies)
    want = ref_fn(0).float()
    pdl = pdl_enabled(x.device)
    cands = list(candidates(m, rows, k, gated, wide))
    if PRECOMPILER is not None:  # compile every candidate in parallel processes first
        PRECOMPILER.compile_ahead(lambda c=c, p=p: gemv(x, ws[0], None, c, act, p)
                                  for c in cands for p in {False, pdl})
    results = []
    for cfg in cands:
        try:
            got = gemv(x, ws[0], None, cfg, act).float()
            err = ((got - want).norm() / want.norm()).item()
            if not err < 1e-2:
                print(f"  WRONG {cfg}: rel err {err:.2e}", flush=True)
                continue
            results.append((time_graph(lambda i: gemv(x, ws[i], None, cfg, act, pdl), copies),
                            cfg))
        except Exception as e:  # noqa: BLE001 (a tile that does not compile is skipped)
            print(f"  skip {cfg}: {type(e).__name__}: {str(e)[:120]}", flush=True)
    if not results:
        print(f"{model:10s} {name:8s} M={m:2d}: no candidate tile", flush=True)
        return None
    best_us, best = min(results, key=lambda r: r[0])
    no_pdl_us = time_graph(lambda i: gemv(x, ws[i], None, best, act), copies) if pdl else None
    row = dict(model=model, shape=name, gated=gated, N=rows, K=k, M=m, cublas_us=cublas,
               triton_us=best_us, pdl=pdl, no_pdl_us=no_pdl_us, cfg=best, candidates=len(results),
               tbps_cublas=nbytes / cublas / 1e6, tbps_triton=nbytes / best_us / 1e6)
    print(f"{model:10s} {name:8s}{'+act' if gated else '    '} {rows:6d}x{k:5d} M={m:2d}  "
          f"cuBLAS {cublas:7.1f} us ({row['tbps_cublas']:.2f} TB/s)  triton {best_us:7.1f} us "
          f"({row['tbps_triton']:.2f} TB/s) x{cublas / best_us:.2f}"
          f"{'' if no_pdl_us is None else f'  (no PDL {no_pdl_us:6.1f})'}  {best}", flush=True)
    out.write(json.dumps(row) + "\n")
    out.flush()
    return row


def engine(config: str, out_path: str, max_model_len: int = 4096,
           batches: tuple[int, ...] = (1, 32)) -> None:
    """Decode ms/step at each batch size (input 128, output 128), as benchmarks/gpu_suite.py."""
    from litevllm import LLM
    from litevllm.bench import measure_latency
    llm = LLM(str(Path(__file__).parent / "configs" / config), load_format="dummy",
              max_num_seqs=256, max_model_len=max_model_len)  # as gpu_suite
    env = {k: os.environ.get(k, "1") for k in ("LITEVLLM_GEMV", "LITEVLLM_PDL")}
    with open(out_path, "a") as out:
        for batch in batches:
            r = {"config": config, **env,
                 **measure_latency(llm, batch_size=batch, input_len=128, output_len=128)}
            print(json.dumps(r), flush=True)
            out.write(json.dumps(r) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="gemv_sweep.jsonl")
    ap.add_argument("--table", help="write the winners here (JSON)")
    ap.add_argument("--models", default=",".join(SHAPES))
    ap.add_argument("--m", default=",".join(map(str, M_BUCKETS)),
                    help="row counts to sweep (the table's buckets)")
    ap.add_argument("--shapes", help="only these shape names (qkv,o,gate_up,down,lm_head)")
    ap.add_argument("--wide", action="store_true",
                    help="more candidates: 8-warp register tiles (2 or 4 stages), 4-stage tl.dot tiles")
    ap.add_argument("--margin", type=float, default=0.97,
                    help="take Triton where it needs at most this fraction of cuBLAS's time")
    ap.add_argument("--engine", metavar="CONFIG", help="measure engine decode instead")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--batches", default="1,32", help="--engine: decode batch sizes")
    args = ap.parse_args()
    if args.engine:
        return engine(args.engine, args.out, args.max_model_len,
                      tuple(map(int, args.batches.split(","))))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}"
          f"; copy bandwidth {copy_bandwidth():.2f} TB/s", flush=True)
    table: dict[str, dict] = {}
    if args.table and Path(args.table).is_file():
        table = json.loads(Path(args.table).read_text())
    global PRECOMPILER
    from litevllm.engine.precompile import Precompiler
    PRECOMPILER = Precompiler.for_sweep()
    t0 = time.time()
    with open(args.out, "w") as out:
        for model in args.models.split(","):
            for name, rows, k, gated in SHAPES[model]:
                if args.shapes and name not in args.shapes.split(","):
                    continue
                for m in map(int, args.m.split(",")):
                    r = sweep_shape(model, name, rows, k, gated, m, out, args.wide)
                    if r is None:
                        continue
                    n = rows // 2 if gated else rows
                    key = table_key("gated" if gated else "linear", n, k)
                    win = r["triton_us"] <= args.margin * r["cublas_us"]
                    table.setdefault(key, {})[str(m)] = r["cfg"] if win else None
                    if args.table:
                        with open(args.table, "w") as f:
                            json.dump(table, f, indent=1, sort_keys=True)
    print(f"sweep took {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
