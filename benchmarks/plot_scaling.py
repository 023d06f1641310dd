"""PNG plots from scaling JSON files (``bench_scaling.py --out`` or ``lite bench throughput
--json-out``); each file is one line per plot, labelled by its ``meta.label`` or file name.

    python benchmarks/plot_scaling.py A.json [B.json ...] --out-dir benchmarks/plots

Writes, for the data present: scaling_prompts.png (output tok/s and peak memory against the
number of prompts), scaling_length.png (output tok/s against input = output length) and
scaling_rate.png (TTFT and inter-token latency p50/p99 against the Poisson arrival rate).
A ``lite bench throughput`` file is a point of the prompts curve, or of the rate curves
when it was run with ``--request-rate``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(path: Path) -> tuple[str, list[dict]]:
    """(label, records); a bare ``lite bench throughput`` result becomes one record."""
    data = json.loads(path.read_text())
    if "records" in data:
        return data.get("meta", {}).get("label") or path.stem, data["records"]
    rec = dict(data, sweep="rates" if "request_rate" in data else "prompts")
    return Path(str(data.get("model", path.stem))).name, [rec]


def series(files: list[Path]) -> dict[str, dict[str, list[dict]]]:
    """{sweep: {label: records sorted by x}}, merging files that share a label."""
    out: dict[str, dict[str, list[dict]]] = {}
    for path in files:
        label, records = load(path)
        for rec in records:
            if rec["sweep"] not in X:  # e.g. the sampled/greedy pair: no curve
                continue
            out.setdefault(rec["sweep"], {}).setdefault(label, []).append(rec)
    for sweep, by_label in out.items():
        for recs in by_label.values():
            recs.sort(key=lambda r: r[X[sweep]])
    return out


X = {"prompts": "num_prompts", "lengths": "length", "rates": "request_rate"}


def _axes(plt, n: int, title: str):
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 4.2), squeeze=False)
    fig.suptitle(title)
    return fig, axes[0]


def _plot(ax, recs, x, y, label, **kw):
    pts = [(r[x], r[y]) for r in recs if y in r]
    if pts:
        ax.plot(*zip(*pts), marker="o", label=label, **kw)


def _log_x(ax, by_label: dict, key: str):
    """Base-2 log x axis ticked at the measured points, labelled in plain numbers."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    xs = sorted({r[key] for recs in by_label.values() for r in recs})
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _finish(fig, axes, path: Path, written: list[Path]):
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    written.append(path)


def plot(files: list[Path], out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    data, written = series(files), []
    if "prompts" in data:
        fig, (a, b) = _axes(plt, 2, "All prompts at once, lengths uniform")
        for label, recs in data["prompts"].items():
            _plot(a, recs, "num_prompts", "output_tok_per_s", label)
            _plot(b, recs, "num_prompts", "peak_memory_gib", f"{label}: allocator peak")
            _plot(b, recs, "num_prompts", "kv_peak_gib", f"{label}: KV cache in use", ls="--")
        a.set(xlabel="number of prompts", ylabel="output tokens/s")
        b.set(xlabel="number of prompts", ylabel="GiB")
        for ax in (a, b):
            _log_x(ax, data["prompts"], "num_prompts")
        _finish(fig, (a, b), out_dir / "scaling_prompts.png", written)
    if "lengths" in data:
        fig, (a,) = _axes(plt, 1, "Throughput against length (input = output)")
        for label, recs in data["lengths"].items():
            _plot(a, recs, "length", "output_tok_per_s", label)
        a.set(xlabel="input = output length (tokens)", ylabel="output tokens/s")
        _log_x(a, data["lengths"], "length")
        _finish(fig, (a,), out_dir / "scaling_length.png", written)
    if "rates" in data:
        fig, (a, b) = _axes(plt, 2, "Poisson arrivals on the offline engine")
        for label, recs in data["rates"].items():
            for q, ls in (("p50", "-"), ("p99", "--")):
                _plot(a, recs, "request_rate", f"ttft_ms_{q}", f"{label} {q}", ls=ls)
                _plot(b, recs, "request_rate", f"itl_ms_{q}", f"{label} {q}", ls=ls)
        a.set(xlabel="arrival rate (requests/s)", ylabel="TTFT (ms)", yscale="log")
        b.set(xlabel="arrival rate (requests/s)", ylabel="inter-token latency (ms)")
        _finish(fig, (a, b), out_dir / "scaling_rate.png", written)
    plt.close("all")
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--out-dir", type=Path, default=Path("benchmarks/plots"))
    args = ap.parse_args(argv)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        ap.error(f"no such file: {', '.join(missing)}")
    for path in plot(args.files, args.out_dir):
        print(path)


if __name__ == "__main__":
    main()
