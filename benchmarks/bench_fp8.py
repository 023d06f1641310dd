"""FP8 against bf16 on Llama-3-8B (dummy weights), one process, same run:

    python benchmarks/bench_fp8.py --out results.jsonl [--sweep] [--pick] [--skip-engine]
        [--runs decode_b1,decode_b64]

Engine: batch-1 and batch-64 decode ms/step, prefill of 2048 tokens (``measure_latency``, as
``lite bench latency``) for bf16 and for online ``quantization="fp8"``. ``--sweep``: the fp8
GEMM kernels at the model's shapes with a few tile configs next to the default, and bf16
``torch.matmul``, for picking defaults. ``--pick`` (before the engine runs): a few configs of
the M <= 4 GEMV at each shape, at M = 1 and M = 4, against the split-K ``tl.dot`` kernel; the
fastest overrides the GPU's table (``litevllm_fp8/kernels/configs/<device>.json``, see
``kernels/tuning.py``) for the engine runs that follow (null where ``tl.dot`` wins) and is
written to ``fp8_gemv_tuned.json`` next to ``--out`` (copy its "gemv" into that table). One
JSON result per line.
"""
from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import torch

CONFIG = Path(__file__).parent / "configs" / "llama-3-8b"
RUNS = [("decode_b1", dict(batch_size=1, input_len=128, output_len=32)),
        ("decode_b64", dict(batch_size=64, input_len=128, output_len=16)),
        ("prefill_2048", dict(batch_size=1, input_len=2048, output_len=2))]
# Llama-3-8B linear layers as (name, K, N)
SHAPES = [("qkv", 4096, 6144), ("o", 4096, 4096), ("gate_up", 4096, 28672), ("down", 14336, 4096)]


def emit(out, record: dict) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    out.write(line + "\n")
    out.flush()


def engine(out, iters: int, config: Path, device: str, runs: list[str]) -> None:
    from litevllm import LLM
    from litevllm.bench import measure_latency
    for quant in (None, "fp8"):
        t0 = time.perf_counter()
        llm = LLM(str(config), load_format="dummy", quantization=quant, max_num_seqs=64,
                  max_model_len=4096, device=device)
        params = llm.engine.model.parameters()
        emit(out, {"quantization": quant or "bf16", "startup_s": time.perf_counter() - t0,
                   "weights_gib": sum(p.numel() * p.element_size() for p in params) / 2**30})
        for name, kw in RUNS:
            if name not in runs:
                continue
            r = measure_latency(llm, num_iters=iters, num_iters_warmup=1, **kw)
            emit(out, {"run": name, "quantization": quant or "bf16", **r})
        del llm
        gc.collect()
        torch.cuda.empty_cache()


def sweep(out) -> None:
    """Kernel times under CUDA graphs (no Python launch overhead), M = 1, then 64, then 2048."""
    from triton.testing import do_bench_cudagraph

    from litevllm_fp8 import reference as ref
    from litevllm_fp8.kernels.act_quant import quant_act
    from litevllm_fp8.kernels.w8a16_gemm import default_config as wo_default, w8a16_gemm
    from litevllm_fp8.kernels.w8a8_gemm import default_config as a8_default, w8a8_gemm

    def ms(fn):
        return do_bench_cudagraph(fn, rep=20, return_mode="median")
    skinny = [dict(BLOCK_M=16, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=sk, num_warps=4, num_stages=st)
              for bn, bk, sk, st in [(16, 256, 1, 4), (32, 256, 1, 4), (64, 256, 1, 4),
                                     (32, 128, 2, 4), (32, 512, 1, 3)]]
    mid = [dict(BLOCK_M=64, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=1, num_warps=4, num_stages=st)
           for bn, bk, st in [(64, 256, 3), (32, 128, 5), (64, 128, 4)]]
    big = [dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=128, GROUP_M=8, num_warps=w, num_stages=st)
           for bm, bn, w, st in [(128, 256, 8, 3), (128, 128, 4, 4)]]
    weights = {}
    for name, k, n in SHAPES:
        w = torch.randn(n, k, device="cuda") / k ** 0.5
        q, s = ref.quantize_rows(w)
        weights[name] = (q.view(torch.uint8), s, w.bfloat16())
        del w
    for m, alts in ((1, skinny), (64, mid), (2048, big)):
        for name, k, n in SHAPES:
            q, s, wb = weights[name]
            x = torch.randn(m, k, device="cuda").bfloat16()
            rec = {"sweep": name, "M": m, "K": k, "N": n, "bf16_ms": ms(lambda: x @ wb.t())}
            if m <= 16:
                rec["default"] = wo_default(m, n, k, k, x.device, x.dtype)
                rec["default_ms"] = ms(lambda: w8a16_gemm(x, q, s, k))
                rec["alts_ms"] = [ms(lambda c=c: w8a16_gemm(x, q, s, k, config=c)) for c in alts]
            else:
                rec["default"] = a8_default(m, n, x.device)
                rec["quant_ms"] = ms(lambda: quant_act(x))
                xq, xs = quant_act(x)
                rec["default_ms"] = ms(lambda: w8a8_gemm(xq, xs, q, s, k, None, x.dtype))
                rec["alts_ms"] = [ms(lambda c=c: w8a8_gemm(xq, xs, q, s, k, None, x.dtype, c))
                                  for c in alts]
                rec["weight_only_ms"] = ms(lambda: w8a16_gemm(x, q, s, k))
            rec["alts"] = alts
            rec["weight_gb_per_s"] = n * k / rec["default_ms"] / 1e6
            emit(out, rec)


# GEMV candidates: (BLOCK_N, BLOCK_K, VEC, EACH, num_warps, UNROLL, programs per SM for split-K)
GEMV_M1 = [(8, 512, 16, False, 8, 2, 4), (4, 512, 16, False, 4, 2, 4),
           (8, 512, 16, False, 4, 2, 4), (16, 512, 16, False, 4, 1, 4),
           (32, 512, 16, True, 4, 1, 4), (16, 256, 8, False, 4, 2, 4),
           (8, 512, 16, False, 8, 2, 8), (8, 512, 16, False, 8, 2, 1)]
GEMV_M4 = [(8, 512, 16, True, 8, 2, 4), (4, 256, 8, False, 4, 2, 4),
           (8, 256, 8, False, 4, 1, 4), (4, 512, 16, False, 4, 2, 4)]


def pick(out, device: str = "cuda", shapes=SHAPES, ms=None) -> dict:
    """Time the GEMV candidates and the split-K tl.dot default under CUDA graphs, at M = 1 and
    M = 4 on each Llama-3-8B shape (online fp8: per-channel scales), and keep the fastest;
    returns them as the tuning table's {"M,K,N": cfg or None}."""
    from triton.testing import do_bench_cudagraph

    from litevllm_fp8 import reference as ref
    from litevllm_fp8.kernels import w8a16_gemv as gemv
    from litevllm_fp8.kernels import tuning
    from litevllm_fp8.kernels._device import num_sms
    from litevllm_fp8.kernels.w8a16_gemm import w8a16_gemm

    ms = ms or (lambda fn: do_bench_cudagraph(fn, rep=20, return_mode="median"))
    sms = num_sms(torch.device(device))
    act = torch.bfloat16 if device == "cuda" else torch.float16
    layer = {"bf16_ms": 0.0, "fp8_ms": 0.0}  # M = 1, the four linears of one layer
    picked = {}
    for name, k, n in shapes:
        w = torch.randn(n, k, device=device) / k ** 0.5
        q, s = ref.quantize_rows(w)
        q, wb = q.view(torch.uint8), w.to(act)
        del w
        for m, cands in ((1, GEMV_M1), (4, GEMV_M4)):
            x = torch.randn(m, k, device=device).to(act)
            want = x.float() @ ref.dequantize(q, s, k).t()
            cfgs = [dict(BLOCK_N=bn, BLOCK_K=bk, VEC=v, EACH=e, num_warps=nw, UNROLL=u,
                         SPLIT_K=gemv.split_for(n, k, bn, bk, p * sms))
                    for bn, bk, v, e, nw, u, p in cands]
            times, errors = [], []
            for c in cfgs:
                try:
                    got = gemv.w8a16_gemv(x, q, s, k, config=c).float()
                    err = ((got - want).abs().max() / want.abs().max()).item()
                    t = ms(lambda c=c: gemv.w8a16_gemv(x, q, s, k, config=c)) \
                        if err < 2e-2 else float("inf")
                except Exception as e:  # a config that does not compile here: skip it
                    err, t = f"{type(e).__name__}: {str(e)[:200]}", float("inf")
                times.append(t)
                errors.append(err)
            dot_ms = ms(lambda: w8a16_gemm(x, q, s, k))
            bf16_ms = ms(lambda: x @ wb.t())
            best = min(range(len(cfgs)), key=times.__getitem__)
            win = cfgs[best] if times[best] < dot_ms else None
            tuning.set_pick(torch.device(device), m, k, n, win)
            picked[f"{m},{k},{n}"] = win
            fp8_ms = min(times[best], dot_ms)
            if m == 1:
                layer["bf16_ms"] += bf16_ms
                layer["fp8_ms"] += fp8_ms
            emit(out, {"pick": name, "M": m, "K": k, "N": n, "gemv_ms": times, "errors": errors,
                       "configs": cfgs, "dot_ms": dot_ms, "bf16_ms": bf16_ms, "picked": win,
                       "weight_gb_per_s": n * k / fp8_ms / 1e6})
    emit(out, {"pick_layer_m1": layer})
    return picked


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--skip-engine", action="store_true")
    p.add_argument("--pick", action="store_true", help="tune the M <= 4 GEMV first")
    p.add_argument("--runs", default=",".join(r for r, _ in RUNS))
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--config", default=str(CONFIG), help="a model config dir (smoke tests)")
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with open(a.out, "a") as out:
        emit(out, {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                   "torch": torch.__version__})
        if a.pick:
            tuned = Path(a.out).with_name("fp8_gemv_tuned.json")
            tuned.write_text(json.dumps({"gemv": pick(out)}, indent=1) + "\n")
        if not a.skip_engine:
            engine(out, a.iters, Path(a.config), device, a.runs.split(","))
        if a.sweep:
            sweep(out)


if __name__ == "__main__":
    main()
