"""FP8 against bf16 on Llama-3-8B (dummy weights), one process, same run:

    python benchmarks/bench_fp8.py --out results.jsonl [--sweep] [--skip-engine]

Engine: batch-1 and batch-64 decode ms/step, prefill of 2048 tokens (``measure_latency``, as
``lite bench latency``) for bf16 and for online ``quantization="fp8"``. ``--sweep``: the fp8
GEMM kernels at the model's shapes with a few tile configs next to the default, and bf16
``torch.matmul``, for picking defaults. One JSON result per line.
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


def engine(out, iters: int, config: Path, device: str) -> None:
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--skip-engine", action="store_true")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--config", default=str(CONFIG), help="a model config dir (smoke tests)")
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with open(a.out, "a") as out:
        emit(out, {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                   "torch": torch.__version__})
        if not a.skip_engine:
            engine(out, a.iters, Path(a.config), device)
        if a.sweep:
            sweep(out)


if __name__ == "__main__":
    main()
