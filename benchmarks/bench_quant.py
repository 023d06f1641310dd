"""W4A16 / W8A16 on one GPU: kernel tuning sweep, then Llama-3-8B decode (dummy weights) for bf16
vs W4A16 (GPTQ, group 128) vs online int8 with the table just tuned, all in ONE process.

    python benchmarks/bench_quant.py --out $OUT [--skip-sweep] [--skip-engine] [--table T]
        [--ms 1,2,4,8,16]

The sweep starts from ``--table`` (default: the packaged table for this GPU), re-tunes the
decode rows ``--ms`` (GEMV variants, both kernels, against the tl.dot kernel), sets
``policy.gemv_max_m`` and keeps the other entries. Writes ``bench_quant.jsonl`` (one JSON
result per line, also printed) and ``tuned.json`` (copy it to
plugins/gptq/litevllm_gptq/kernels/configs/<device>.json).
"""
import argparse
import copy
import gc
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
import triton

from litevllm_gptq.kernels import tuning
from litevllm_gptq.kernels.gemm import default_config as gemm_default
from litevllm_gptq.kernels.gemv import config_for
from litevllm_gptq.kernels.gemv import default_config as gemv_default
from litevllm_gptq.kernels.gemv_wide import SWEEP_TILES
from litevllm_gptq.layout import PackedWeight, matmul_ref, pack_rows
from litevllm_gptq.linear import kernel_linear

DEVICE = "cuda"
CONFIGS = Path(__file__).parent / "configs"
LLAMA = [(4096, 6144), (4096, 4096), (4096, 28672), (14336, 4096), (4096, 14336)]  # (K, N)


def emit(out, record):
    print(json.dumps(record), flush=True)
    out.write(json.dumps(record) + "\n")
    out.flush()


def bench(fn) -> float:
    """Median ms with the L2 flushed before each run (weights come from HBM)."""
    return triton.testing.do_bench(fn, warmup=5, rep=25, return_mode="median")


def copy_bandwidth() -> float:
    src = torch.empty(2**30, dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
    return 2 * src.numel() / (ms / 1e3) / 1e9


def packed(k, n, bits=4, group=128, zero=True):
    codes = torch.randint(0, 2**bits, (k, n), device=DEVICE)
    g = k if group == -1 else group
    scales = (torch.rand(k // g, n, device=DEVICE) * 0.01 + 0.002).half()
    bias = (-8 * scales.float()).half() if zero else None
    return PackedWeight(pack_rows(codes, bits), scales, bias, bits, g)


def packed_bytes(w: PackedWeight) -> int:
    return sum(t.numel() * t.element_size() for t in (w.qweight, w.scales, w.bias) if t is not None)


def gemv_variants(m, k, n, bits):
    """The split-K kernel's default and best measured tiles, then the wide kernel (threads
    span N, barrier-free K loop) over lanes x warps x rows per step x split-K."""
    base = gemv_default(1, k, n, bits)
    s = base["SPLIT"]
    rows = k * bits // 32
    out = [{}, dict(TILE_ROWS=32), dict(SPLIT=s * 2)]
    for r, vec, nw in SWEEP_TILES:
        for target in (264, 528, 1056):
            split = _split(n, 32 * vec * nw, rows, max(1, target // m), r)
            cfg = dict(KERNEL="wide", VEC=vec, num_warps=nw, R=r, SPLIT=split)
            if cfg not in out:
                out.append(cfg)
    return out


def _split(n, bn, rows, target=264, step=16):
    split = 1
    while triton.cdiv(n, bn) * split < target and rows // (split * 2) >= step and split < 64:
        split *= 2
    return split


def gemm_variants(m):
    out = [{}, dict(SPLIT=1), dict(BN=128), dict(BK=64), dict(num_stages=4), dict(num_warps=8)]
    if m >= 256:
        out += [dict(BM=64, BN=128), dict(BM=128, BN=256, num_warps=8)]
    return out


def sweep(out, bits=4, group=128, zero=True, ms=(1, 2, 4, 8, 16), shapes=LLAMA, table=None,
          save=None):
    """Time every candidate per (M, K, N), keep the correct and fastest; ``save(table)`` after
    each shape so a cut-short run keeps what it measured."""
    table = table if table is not None else {}
    table.setdefault("gemv", {})
    table.setdefault("gemm", {})
    choice, totals, gemv_won = {}, {}, {}
    for k, n in shapes:
        w = packed(k, n, bits, group, zero)
        dense = torch.randn(k, n, device=DEVICE, dtype=torch.bfloat16)
        for m in ms:
            x = torch.randn(m, k, device=DEVICE, dtype=torch.bfloat16)
            ref = matmul_ref(x.float(), w)
            results = {"bf16": bench(lambda: x @ dense)}
            cands = []
            if m <= 16:
                cands += [("gemv", c) for c in gemv_variants(m, k, n, bits)]
            if m > 1:
                cands += [("gemm", c) for c in gemm_variants(m)]
            if m >= 256:
                cands.append(("cublas", {}))
            best = {}
            for path, cfg in cands:
                fn = _runner(path, x, w, cfg)
                try:
                    y = fn()
                    err = ((y.float() - ref).norm() / ref.norm()).item()
                    if not err < 1e-2:
                        emit(out, {"kind": "wrong", "path": path, "cfg": cfg, "m": m, "k": k,
                                   "n": n, "rel_err": err})
                        continue
                    t = bench(fn)
                except Exception as e:  # noqa: BLE001  a config that does not compile
                    emit(out, {"kind": "fail", "path": path, "cfg": cfg, "m": m, "k": k, "n": n,
                               "error": f"{type(e).__name__}: {str(e)[:200]}"})
                    continue
                emit(out, {"kind": "cand", "path": path, "cfg": cfg, "m": m, "k": k, "n": n,
                           "us": round(t * 1e3, 2)})
                if path not in best or t < best[path][0]:
                    best[path] = (t, cfg)
            for path, (t, cfg) in best.items():
                results[path] = t
                if path == "gemv":
                    table["gemv"].pop(f"b{bits},{k},{n}", None)  # older M-less entry
                    table["gemv"][f"{m},b{bits},{k},{n}"] = config_for(m, k, n, bits, x.device, cfg)
                elif path == "gemm":
                    table["gemm"][f"{m},b{bits},{k},{n}"] = {**gemm_default(m, k, n, bits), **cfg}
            if len(results) == 1:  # nothing compiled or nothing was right
                continue
            fastest = min((p for p in results if p != "bf16"), key=results.get)
            choice[(m, k, n)] = fastest
            for path in ("gemv", "gemm"):
                if path in results:
                    totals.setdefault((m, path), []).append(results[path])
            gemv_won[(m, k, n)] = "gemv" in results and results["gemv"] < results.get("gemm", 1e9)
            rec = {"kind": "kernel", "bits": bits, "group": group, "m": m, "k": k, "n": n,
                   "ms": results, "best": fastest,
                   "best_cfg": best.get(fastest, (0, {}))[1],
                   "gemv_cfg": best.get("gemv", (0, None))[1],
                   "packed_gb_per_s": packed_bytes(w) / (results[fastest] / 1e3) / 1e9}
            emit(out, rec)
        del w, dense
        if save is not None:
            save(table)
    policy = table.setdefault("policy", {"gemv_max_m": 1, "cublas_min_m": 512})
    at512 = [v for (m, _, _), v in choice.items() if m == 512]
    if at512:
        policy["cublas_min_m"] = 512 if at512.count("cublas") * 2 > len(at512) else 4096
    # GEMV up to the largest M below which it beats tl.dot summed over the swept shapes
    if bits == 4 and len(ms) > 1:
        gemv_max = 1
        for m in sorted(m for m in ms if m > 1):
            g, d = totals.get((m, "gemv")), totals.get((m, "gemm"))
            if not g or not d or len(g) != len(d) or sum(g) >= sum(d):
                break
            gemv_max = m
        policy["gemv_max_m"] = gemv_max
        by_shape = policy.setdefault("gemv_max_m_by_shape", {})
        for k, n in shapes:  # per shape: the GEMV up to the first M where tl.dot wins
            top = 1
            for m in sorted(m for m in ms if m > 1):
                if not gemv_won.get((m, k, n)):
                    break
                top = m
            by_shape[f"b{bits},{k},{n}"] = top
    return table


def _runner(path, x, w, cfg):
    if path == "gemv":
        from litevllm_gptq.kernels.gemv import gemv
        return lambda: gemv(x, w, config=cfg)
    if path == "gemm":
        from litevllm_gptq.kernels.gemm import gemm
        return lambda: gemm(x, w, config=cfg)
    return lambda: kernel_linear(x, w, path="cublas")


def model_bytes(model) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t is not None and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def engine(out, label, path, quantization=None, batches=((1, 64, 64), (64, 64, 32))):
    from litevllm import LLM
    from litevllm.bench import measure_latency
    t0 = time.perf_counter()
    llm = LLM(str(path), load_format="dummy", quantization=quantization, max_num_seqs=64,
              max_model_len=1024, gpu_memory_utilization=0.3)
    emit(out, {"kind": "engine", "label": label, "startup_s": time.perf_counter() - t0,
               "weights_gb": model_bytes(llm.engine.model) / 1e9})
    for bs, inp, outp in batches:
        r = measure_latency(llm, batch_size=bs, input_len=inp, output_len=outp, num_iters=2,
                            num_iters_warmup=1)
        emit(out, {"kind": "decode", "label": label, "batch_size": bs,
                   "decode_ms_per_step": r["decode_ms_per_step"], "prefill_ms": r["prefill_ms"],
                   "cuda_graphs": r["cuda_graphs"], "scheduler_steps": r["scheduler_steps"]})
    del llm
    gc.collect()
    torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".")
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--skip-engine", action="store_true")
    p.add_argument("--table", default=None, help="tuned.json of an earlier sweep to start from "
                   "(default: the packaged table)")
    p.add_argument("--ms", default="1,2,4,8,16", help="decode rows to tune")
    a = p.parse_args()
    outdir = Path(a.out)
    outdir.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    with open(outdir / "bench_quant.jsonl", "a") as out:
        emit(out, {"kind": "device", "name": torch.cuda.get_device_name(),
                   "copy_gb_per_s": copy_bandwidth()})
        if a.table and Path(a.table).is_file():
            tuning.set_table(dev, json.loads(Path(a.table).read_text()))
        if not a.skip_sweep:
            def save(t):
                (outdir / "tuned.json").write_text(json.dumps(t, indent=1))
            table = copy.deepcopy(tuning.table(dev))
            ms = tuple(int(v) for v in a.ms.split(","))
            sweep(out, ms=ms, table=table, save=save)
            sweep(out, bits=8, group=-1, zero=False, ms=(1,), table=table, save=save)
            tuning.set_table(dev, table)
            emit(out, {"kind": "policy", **table.get("policy", {})})
        if not a.skip_engine:
            tmp = Path(tempfile.mkdtemp())
            gptq_dir = tmp / "llama-3-8b-gptq"
            shutil.copytree(CONFIGS / "llama-3-8b", gptq_dir)
            cfg = json.loads((gptq_dir / "config.json").read_text())
            cfg["quantization_config"] = dict(quant_method="gptq", bits=4, group_size=128,
                                              desc_act=False, sym=True, checkpoint_format="gptq")
            (gptq_dir / "config.json").write_text(json.dumps(cfg))
            for label, path, q in (("bf16", CONFIGS / "llama-3-8b", None),
                                   ("w4a16-g128", gptq_dir, None),
                                   ("int8", CONFIGS / "llama-3-8b", "int8")):
                try:
                    engine(out, label, path, q)
                except Exception as e:  # noqa: BLE001  one failure must not cost the others
                    emit(out, {"kind": "engine-error", "label": label,
                               "error": f"{type(e).__name__}: {str(e)[:300]}"})


if __name__ == "__main__":
    main()
