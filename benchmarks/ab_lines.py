"""A/B rows for `run_gpu.sh ab`: one compact JSON line per gpu_suite row, tagged with its tree.

    python benchmarks/ab_lines.py SUITE_OUT.jsonl TREE PAIR >> ab.jsonl   # tag one run's rows
    python benchmarks/ab_lines.py --table ab.jsonl [tput.jsonl]           # markdown, new | base

A row is named by its suite and shape (``tinyllama_latency b1 in128``, ``... throughput``);
its value is ms per decode step (latency rows with output), ms to first token (prefill rows:
output_len <= 2) or output tok/s (throughput rows). Throughput runs of ``lite bench
throughput`` (run_gpu.sh's tput.jsonl, tagged ``<model> <flags> <tree> <pair>``) join the table.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict


def rows(path: str):
    """(row name, value, unit) for each measured line of a gpu_suite JSONL file."""
    for line in open(path):
        d = json.loads(line)
        if d.get("kind") == "latency":
            name = f"{d['suite']} b{d['batch_size']} in{d['input_len']}"
            if d.get("output_len", 0) <= 2:
                yield name + " prefill", d["prefill_ms"], "ms"
            else:
                yield name, d["decode_ms_per_step"], "ms/step"
        elif d.get("kind") == "throughput":
            yield f"{d['suite']} throughput", d["output_tok_per_s"], "tok/s"


def table(paths: list[str]) -> str:
    got = defaultdict(lambda: defaultdict(list))  # row -> tree -> values in run order
    units = {}
    for path in paths:
        for line in open(path):
            d = json.loads(line)
            if "row" in d:
                got[d["row"]][d["tree"]].append(d["value"])
                units[d["row"]] = d["unit"]
            elif "run" in d:  # run_gpu.sh's tput line: "<model> <flags...> <tree> <pair>"
                words = d["run"].split()
                if len(words) >= 3 and words[-2] in ("new", "base"):
                    row = " ".join(words[:-2]) + " (lite bench throughput)"
                    got[row][words[-2]].append(d["output_tok_per_s"])
                    units[row] = "tok/s"
    out = ["| row | unit | new | base |", "|---|---|---|---|"]
    for row, trees in got.items():
        cells = [", ".join(f"{v:,.0f}" if v >= 1000 else f"{v:.4g}" for v in trees.get(t, []))
                 or "-" for t in ("new", "base")]
        out.append(f"| {row} | {units[row]} | {cells[0]} | {cells[1]} |")
    return "\n".join(out)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--table"]:
        print(table(argv[1:]))
        return
    path, tree, pair = argv
    for row, value, unit in rows(path):
        print(json.dumps({"row": row, "tree": tree, "pair": int(pair), "value": value,
                          "unit": unit}))


if __name__ == "__main__":
    main(sys.argv[1:])
