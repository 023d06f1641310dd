"""Does an L2 prefetch of a GEMV's weights, issued by the small kernel before it, pay at batch 1?

Chains, each captured in one CUDA graph over weight copies that defeat the L2 (µs per link):
  plain   : rms_norm(x) -> gemv(W_i)
  pf      : rms_norm(x) + P extra programs that bulk-prefetch W_i into L2 -> gemv(W_i)
  slow    : 3 x rms_norm -> gemv(W_i)              (a ~3 µs predecessor, like attention)
  slow_pf : the first of the 3 norms prefetches W_i -> gemv(W_i)
  hot     : gemv(W_0) only, one copy (L2-resident)
  side    : slow, with a prefetch kernel of W_i on a side stream forked before the first norm
            and joined after the GEMV (a parallel graph branch)
  side1   : the same with one norm
Output: one JSON line a shape. Run on the GPU: python benchmarks/bench_l2_prefetch.py
H200, seventeenth session: every prefetching chain but one was slower (RESULTS.md).
"""
from __future__ import annotations

import argparse
import json

import torch
import triton
import triton.language as tl

from litevllm_triton.gemv_table import gemv_config
from litevllm_triton.kernels._common import pdl_enabled, pdl_launch, pdl_trigger, pdl_wait
from litevllm_triton.kernels.gemv import gemv

from bench_gemv import time_graph as _time_graph  # benchmarks/ is on sys.path

SHAPES = {  # name: (rows, K, gated)
    "tl_qkv": (2560, 2048, False), "tl_o": (2048, 2048, False),
    "tl_gate_up": (11264, 2048, True), "tl_down": (2048, 5632, False),
    "l3_qkv": (6144, 4096, False), "l3_o": (4096, 4096, False),
    "l3_down": (4096, 14336, False),
}


@triton.jit
def _bulk_prefetch(ptrs, sizes):
    return tl.inline_asm_elementwise(
        "cp.async.bulk.prefetch.L2.global [$1], $2;\n\tmov.u32 $0, 0;", "=r,l,r",
        [ptrs, sizes], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _norm_pf_kernel(x_ptr, w_ptr, out_ptr, n_cols, eps, pf_ptr, pf_bytes, n_rows,
                    BLOCK: tl.constexpr, PF: tl.constexpr, CHUNK: tl.constexpr,
                    LANES: tl.constexpr, PDL: tl.constexpr):
    pid = tl.program_id(0)
    if pid >= n_rows:  # prefetch programs: no dependency on the previous kernel
        if PF:
            nprog = tl.num_programs(0) - n_rows
            lane = (pid - n_rows) * LANES + tl.arange(0, LANES)
            base = pf_ptr.to(tl.pointer_type(tl.int8))
            for c0 in range(0, tl.cdiv(pf_bytes, CHUNK), nprog * LANES):
                off = (c0 + lane).to(tl.int64) * CHUNK
                ok = off < pf_bytes
                size = tl.where(ok, tl.minimum(pf_bytes - off, CHUNK), 16).to(tl.int32)
                _bulk_prefetch(base + tl.where(ok, off, 0), size)
        pdl_trigger(PDL)
    else:
        pdl_wait(PDL)
        pdl_trigger(PDL)
        cols = tl.arange(0, BLOCK)
        ok = cols < n_cols
        x = tl.load(x_ptr + pid * n_cols + cols, mask=ok, other=0.0).to(tl.float32)
        rstd = tl.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
        w = tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
        tl.store(out_ptr + pid * n_cols + cols, (x * rstd * w).to(out_ptr.dtype.element_ty),
                 mask=ok)


def norm(x, w, out, pf=None, programs=64, chunk=4096, rows=None, pdl=None):
    pdl = pdl_enabled(x.device) if pdl is None else pdl
    n_rows, n = x.shape
    n_rows = n_rows if rows is None else rows
    grid = (n_rows + (programs if pf is not None else 0),)
    _norm_pf_kernel[grid](x, w, out, n, 1e-6, pf if pf is not None else x,
                          pf.numel() * pf.element_size() if pf is not None else 0, n_rows,
                          BLOCK=triton.next_power_of_2(n), PF=pf is not None, CHUNK=chunk,
                          LANES=128, PDL=pdl, num_warps=4, **pdl_launch(pdl))
    return out


def time_graph(fn, copies):
    return _time_graph(fn, copies, trials=5)


def run_shape(name, programs, chunk):
    rows, k, gated = SHAPES[name]
    dt = torch.bfloat16
    nbytes = rows * k * 2
    copies = max(4, -(-400_000_000 // nbytes))
    ws = [torch.randn(rows, k, dtype=dt, device="cuda") * 0.02 for _ in range(copies)]
    x = torch.randn(1, k, dtype=dt, device="cuda")
    nw = torch.ones(k, dtype=dt, device="cuda")
    h = torch.empty_like(x)
    h2, h3 = torch.empty_like(x), torch.empty_like(x)
    act = "silu" if gated else None
    cfg = gemv_config("gated" if gated else "linear", 1, rows // 2 if gated else rows, k,
                      x.device)
    pdl = pdl_enabled(x.device)

    def mm(a, w):
        if cfg is None:
            y = torch.nn.functional.linear(a, w)
            return y
        return gemv(a, w, None, cfg, act, pdl=pdl)

    def slow(i, pf):
        norm(x, nw, h2, pf)
        norm(h2, nw, h3)
        norm(h3, nw, h)
        return mm(h, ws[i])

    res = dict(shape=name, rows=rows, k=k, mb=nbytes / 1e6, cfg=cfg, programs=programs,
               chunk=chunk)
    res["plain"] = time_graph(lambda i: mm(norm(x, nw, h), ws[i]), copies)
    res["pf"] = time_graph(lambda i: mm(norm(x, nw, h, ws[i], programs, chunk), ws[i]), copies)
    res["slow"] = time_graph(lambda i: slow(i, None), copies)
    res["slow_pf"] = time_graph(lambda i: slow(i, ws[i]), copies)
    res["hot"] = time_graph(lambda i: mm(h, ws[0]), copies)
    side = torch.cuda.Stream()

    def branch(i, body):
        fork = torch.cuda.Event()
        fork.record()
        side.wait_event(fork)
        with torch.cuda.stream(side):  # prefetch programs only (rows=0), no PDL off the chain
            norm(x, nw, h, ws[i], programs, chunk, rows=0, pdl=False)
        y = body()
        join = torch.cuda.Event()
        join.record(side)
        torch.cuda.current_stream().wait_event(join)
        return y

    res["side"] = time_graph(lambda i: branch(i, lambda: slow(i, None)), copies)
    res["side1"] = time_graph(lambda i: branch(i, lambda: mm(norm(x, nw, h), ws[i])), copies)
    res["norm_only"] = time_graph(lambda i: norm(x, nw, h), copies)
    res["norm_pf_only"] = time_graph(lambda i: norm(x, nw, h, ws[i], programs, chunk), copies)
    # correctness of the chain is the GEMV's own; check the prefetch did not change results
    ref = mm(norm(x, nw, h), ws[0]).float()
    got = mm(norm(x, nw, h, ws[0], programs, chunk), ws[0]).float()
    res["same"] = bool(torch.equal(ref, got))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--programs", default="64")
    ap.add_argument("--chunks", default="4096")
    ap.add_argument("--out")
    a = ap.parse_args()
    out = open(a.out, "a") if a.out else None
    for name in a.shapes.split(","):
        for p in map(int, a.programs.split(",")):
            for c in map(int, a.chunks.split(",")):
                r = run_shape(name, p, c)
                line = json.dumps(r)
                print(line, flush=True)
                if out:
                    out.write(line + "\n")
                    out.flush()


if __name__ == "__main__":
    main()
