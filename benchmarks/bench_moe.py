"""Fused-MoE kernel timings at decode-sized token counts on the Qwen1.5-MoE-A2.7B shape.

    python benchmarks/bench_moe.py [--config benchmarks/configs/qwen1.5-moe-a2.7b/config.json]
    python benchmarks/bench_moe.py --routing --tokens 1,64,256,512 --route-tiles 2048:8,4096:16

Decode MoE is bound by reading expert weights: for each token count it reports the time, the
GB/s over the bytes of the experts actually routed to (w13 + w2 of each distinct expert, plus
activations), and that as a fraction of measured device copy bandwidth. ``--routing`` times
only the routing + row alignment, graphed: the one-program kernel at each tile:warps
against the torch ops. Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from triton.testing import do_bench

from litevllm.ops import torch_ops as ref
from litevllm_triton.kernels.fused_moe import fused_moe, get_config

DEFAULT = Path(__file__).parent / "configs" / "qwen1.5-moe-a2.7b" / "config.json"


def ms(fn) -> float:
    return do_bench(fn, warmup=25, rep=200, return_mode="median")


def copy_bandwidth() -> float:
    """GB/s of a plain device copy (clone of 1 GiB), counting bytes read and written."""
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_()
    return 2 * x.numel() / ms(lambda: x.clone()) / 1e6


def graphed(fn):
    """Capture ``fn`` in a CUDA graph (as the engine runs decode) and return its replay."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def brief(cfg) -> str:
    tile = lambda t: f"{t['BLOCK_N']}x{t['BLOCK_K']}/w{t['num_warps']}s{t['num_stages']}"  # noqa: E731
    return f"BM={cfg['BLOCK_M']} up={tile(cfg['up'])} down={tile(cfg['down'])}"


def bench_routing(tokens, e, k, renorm, h, inter, dtype, tiles):
    """Graphed route + align per token count: torch ops, then the kernel at each tile."""
    from litevllm_triton.kernels import fused_moe as fm
    saved = fm.ROUTE_TILES
    print(f"route + align, graphed us; E={e} top_k={k}; one program up to {fm.SMALL_ROWS} rows")
    print(f"{'tokens':>6} {'BM':>3} {'torch ops':>9} " + " ".join(f"{x:>10}" for x in tiles))
    for t in tokens:
        logits = torch.randn(t, e, device="cuda", dtype=dtype)
        bm = get_config(t, e, inter, h, dtype, logits.device)["BLOCK_M"]
        torch_ms = ms(graphed(lambda: fm.moe_align(ref.moe_route(logits, k, renorm)[1], e, bm)))
        cols = []
        for tile in tiles:
            fm.ROUTE_TILES = {fm.SMALL_EXPERTS: tuple(map(int, tile.split(":")))}
            one = t * k <= fm.SMALL_ROWS
            cols.append(ms(graphed(lambda: fm.route_and_align(logits, k, renorm, bm))) * 1e3
                        if one else float("nan"))
        fm.ROUTE_TILES = saved
        print(f"{t:>6} {bm:>3} {torch_ms * 1e3:>9.1f} " + " ".join(f"{c:>10.1f}" for c in cols))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT), help="HF config.json of an MoE model")
    p.add_argument("--tokens", default="1,2,4,8,16,32,64")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--out", help="write the rows as JSON here")
    p.add_argument("--routing", action="store_true", help="time only route + align")
    p.add_argument("--route-tiles", default="2048:8", help="tile elements:warps,... to time (each for every expert count; calls "
                        "with few tokens shrink it, see fused_moe.route_launch)")
    args = p.parse_args()
    cfg = json.loads(Path(args.config).read_text())
    e, k, h = cfg["num_experts"], cfg["num_experts_per_tok"], cfg["hidden_size"]
    inter, renorm = cfg["moe_intermediate_size"], cfg.get("norm_topk_prob", False)
    dtype = getattr(torch, args.dtype)
    if args.routing:
        return bench_routing([int(t) for t in args.tokens.split(",")], e, k, renorm, h, inter,
                             dtype, args.route_tiles.split(","))
    size = torch.empty((), dtype=dtype).element_size()
    w13 = torch.randn(e, 2 * inter, h, device="cuda", dtype=dtype) / h ** 0.5
    w2 = torch.randn(e, h, inter, device="cuda", dtype=dtype) / inter ** 0.5
    bw = copy_bandwidth()
    dev = torch.cuda.get_device_name()
    print(f"{dev}: copy bandwidth {bw:.0f} GB/s; E={e} top_k={k} H={h} I={inter} {args.dtype}")
    print(f"{'tokens':>6} {'experts':>7} {'triton us':>9} {'GB/s':>7} {'of copy':>7} "
          f"{'torch ref us':>12}  config")
    rows = []
    for t in map(int, args.tokens.split(",")):
        hidden = torch.randn(t, h, device="cuda", dtype=dtype)
        logits = torch.randn(t, e, device="cuda", dtype=dtype)
        used = ref.moe_route(logits, k, renorm)[1].unique().numel()
        nbytes = used * 3 * inter * h * size + 2 * t * h * size
        tri = ms(graphed(lambda: fused_moe(hidden, w13, w2, logits, k, renorm)))
        torch_ms = ms(lambda: ref.fused_moe(hidden, w13, w2, logits, k, renorm))
        gbs = nbytes / tri / 1e6
        config = get_config(t, e, inter, h, dtype, hidden.device)
        rows.append(dict(tokens=t, experts=used, us=tri * 1e3, gbs=gbs, ratio=gbs / bw,
                         torch_us=torch_ms * 1e3, config=config))
        print(f"{t:>6} {used:>7} {tri * 1e3:>9.1f} {gbs:>7.0f} {gbs / bw:>7.2f} "
              f"{torch_ms * 1e3:>12.1f}  {brief(config)}")
    if args.out:
        Path(args.out).write_text(json.dumps(dict(device=dev, copy_gbs=bw, rows=rows), indent=1))


if __name__ == "__main__":
    main()
