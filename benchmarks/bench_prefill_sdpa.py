"""Prefill attention of pure prompts: the Triton paged kernel against torch's built-in flash
attention (SDPA's flash and cuDNN backends, one call per sequence), µs per layer.

GPU only: python benchmarks/bench_prefill_sdpa.py [--out F]
H200, seventeenth session: the Triton kernel is faster except at Llama-3-8B's heads (RESULTS.md).
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from litevllm_triton.kernels.prefill_attention import prefill_attention

SHAPES = {  # name: (heads, kv heads, head dim, prompt lengths)
    "tinyllama_2048": (32, 4, 64, [2048]),
    "tinyllama_8x1024": (32, 4, 64, [1024] * 8),
    "qwen3_2048": (16, 8, 128, [2048]),
    "llama3_2048": (32, 8, 128, [2048]),
}
PAGE = 16


def timed(fn, reps=20):
    fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(3):
        s.record()
        for _ in range(reps):
            fn()
        e.record()
        e.synchronize()
        best = min(best, s.elapsed_time(e) * 1e3 / reps)
    return best


def run(name):
    h, hkv, d, lens = SHAPES[name]
    dev, dt = "cuda", torch.bfloat16
    t = sum(lens)
    q = torch.randn(t, h, d, dtype=dt, device=dev)
    k = torch.randn(t, hkv, d, dtype=dt, device=dev)
    v = torch.randn(t, hkv, d, dtype=dt, device=dev)
    # paged cache holding the same k/v, sequence b in its own consecutive blocks
    nblocks = sum(-(-n // PAGE) for n in lens)
    kc = torch.zeros(nblocks, PAGE, hkv, d, dtype=dt, device=dev)
    vc = torch.zeros_like(kc)
    width = max(-(-n // PAGE) for n in lens)
    bt = torch.zeros(len(lens), width, dtype=torch.int32, device=dev)
    starts = [0]
    blk = 0
    for b, n in enumerate(lens):
        nb = -(-n // PAGE)
        bt[b, :nb] = torch.arange(blk, blk + nb, dtype=torch.int32)
        for j in range(nb):
            lo, hi = starts[-1] + j * PAGE, min(starts[-1] + (j + 1) * PAGE, starts[-1] + n)
            kc[blk + j, :hi - lo] = k[lo:hi]
            vc[blk + j, :hi - lo] = v[lo:hi]
        blk += nb
        starts.append(starts[-1] + n)
    qsl = torch.tensor(starts, dtype=torch.int32, device=dev)
    seq_lens = torch.tensor(lens, dtype=torch.int32, device=dev)
    scale = d ** -0.5
    out = torch.empty_like(q)
    res = dict(shape=name, tokens=t)
    flops = sum(2 * 2 * n * n / 2 * h * d for n in lens)

    def ours():
        prefill_attention(q, kc, vc, bt, qsl, seq_lens, max(lens), scale, out=out)

    res["triton_us"] = timed(ours)
    ref = out.clone()

    def sdpa(backend):
        def fn():
            for b, n in enumerate(lens):
                lo = starts[b]
                qq = q[lo:lo + n].transpose(0, 1).unsqueeze(0)
                kk = k[lo:lo + n].transpose(0, 1).unsqueeze(0)
                vv = v[lo:lo + n].transpose(0, 1).unsqueeze(0)
                with sdpa_kernel(backend):
                    o = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, scale=scale,
                                                       enable_gqa=True)
                out[lo:lo + n] = o[0].transpose(0, 1)
        return fn

    for label, backend in (("flash", SDPBackend.FLASH_ATTENTION),
                           ("cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:
            res[f"sdpa_{label}_us"] = timed(sdpa(backend))
            res[f"sdpa_{label}_maxdiff"] = (out.float() - ref.float()).abs().max().item()
        except Exception as e:  # a backend that does not take this shape
            res[f"sdpa_{label}"] = f"{type(e).__name__}: {str(e)[:120]}"
    for key in [k_ for k_ in res if k_.endswith("_us")]:
        res[key.replace("_us", "_tflops")] = round(flops / res[key] / 1e6, 1)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--out")
    a = ap.parse_args()
    sink = open(a.out, "a") if a.out else None
    for name in a.shapes.split(","):
        line = json.dumps(run(name))
        print(line, flush=True)
        if sink:
            sink.write(line + "\n")


if __name__ == "__main__":
    main()
