"""GPU timings of the Triton plugin's kernels against device bandwidth and torch baselines.

    python benchmarks/bench_kernels.py --out results.json

Times are medians from triton.testing.do_bench. Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import json

import torch
import triton
from triton.testing import do_bench

from litevllm.ops import torch_ops as ref
from litevllm_triton import kernels


def ms(fn) -> float:
    return do_bench(fn, warmup=25, rep=200, return_mode="median")


def copy_bandwidth() -> float:
    """(GB/s, ms) of a plain device copy (clone of 1 GiB), counting bytes read and written."""
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_()
    t = ms(lambda: x.clone())
    return 2 * x.numel() / t / 1e6, t


def paged_cache(num_seqs, ctx, hkv, d, block_size, dtype):
    blocks_per_seq = triton.cdiv(ctx, block_size)
    n = num_seqs * blocks_per_seq
    k_cache = torch.randn(n, block_size, hkv, d, dtype=dtype, device="cuda")
    v_cache = torch.randn_like(k_cache)
    bt = torch.randperm(n, device="cuda").to(torch.int32).view(num_seqs, blocks_per_seq)
    return k_cache, v_cache, bt


def bench_decode(rows, bw, b=64, ctx=4096, h=32, hkv=8, d=128, block_size=16,
                 dtype=torch.bfloat16):
    k_cache, v_cache, bt = paged_cache(b, ctx, hkv, d, block_size, dtype)
    q = torch.randn(b, h, d, dtype=dtype, device="cuda")
    sl = torch.full((b,), ctx, dtype=torch.int32, device="cuda")
    out = torch.empty_like(q)
    t = ms(lambda: kernels.decode_attention(q, k_cache, v_cache, bt, sl, d ** -0.5, out=out))
    gbs = 2 * b * ctx * hkv * d * k_cache.element_size() / t / 1e6  # K and V read once
    rows.append(dict(name=f"decode_attention B{b} ctx{ctx} H{h}/{hkv} D{d}", ms=t,
                     metric=f"{gbs:.0f} GB/s", ratio=gbs / bw, baseline="copy bandwidth"))


def bench_prefill(rows, t=4096, h=32, d=128, dtype=torch.bfloat16):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    k_cache, v_cache, bt = paged_cache(1, t, h, d, 16, dtype)
    q = torch.randn(t, h, d, dtype=dtype, device="cuda")
    qsl = torch.tensor([0, t], dtype=torch.int32, device="cuda")
    sl = torch.tensor([t], dtype=torch.int32, device="cuda")
    out = torch.empty_like(q)
    tri = ms(lambda: kernels.prefill_attention(q, k_cache, v_cache, bt, qsl, sl, t, d ** -0.5,
                                               out=out))
    qs, ks, vs = (torch.randn(1, h, t, d, dtype=dtype, device="cuda") for _ in range(3))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        sdpa = ms(lambda: torch.nn.functional.scaled_dot_product_attention(qs, ks, vs,
                                                                         is_causal=True))
    tflops = 2 * 2 * h * d * t * t / 2 / tri / 1e9  # causal: half of QK^T and PV
    rows.append(dict(name=f"prefill_attention T{t} causal H{h} D{d}", ms=tri,
                     metric=f"{tflops:.0f} TFLOP/s", ratio=sdpa / tri, baseline="sdpa flash",
                     baseline_ms=sdpa))


def bench_elementwise(rows, t=4096, hidden=4096, inter=14336, dtype=torch.bfloat16):
    x = torch.randn(t, hidden, dtype=dtype, device="cuda")
    res, w = torch.randn_like(x), torch.randn(hidden, dtype=dtype, device="cuda")
    g = torch.randn(t, 2 * inter, dtype=dtype, device="cuda")
    cases = [
        ("rms_norm+residual", lambda m: m.rms_norm(x, w, 1e-6, res), 4 * x.nbytes),
        ("silu_and_mul", lambda m: m.silu_and_mul(g), g.nbytes * 3 // 2),
    ]
    for name, fn, nbytes in cases:
        tri, base = ms(lambda: fn(kernels)), ms(lambda: fn(ref))
        rows.append(dict(name=f"{name} T{t}", ms=tri, metric=f"{nbytes / tri / 1e6:.0f} GB/s",
                         ratio=base / tri, baseline="torch reference", baseline_ms=base))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the table as JSON here")
    args = parser.parse_args()
    torch.manual_seed(0)
    bw, copy_ms = copy_bandwidth()
    rows = [dict(name="device copy (clone 1 GiB)", ms=copy_ms, metric=f"{bw:.0f} GB/s",
                 ratio=1.0, baseline="")]
    bench_decode(rows, bw)
    bench_prefill(rows)
    bench_elementwise(rows)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    print(f"{'kernel':44} {'ms':>8} {'achieved':>14} {'ratio':>7}  vs")
    for r in rows:
        print(f"{r['name']:44} {r['ms']:8.3f} {r['metric']:>14} {r['ratio']:7.2f}  {r['baseline']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                           triton=triton.__version__, copy_gbs=bw, rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
