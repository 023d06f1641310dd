"""benchmarks/ab_lines.py: gpu_suite rows tagged by tree, and the new | base table."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "ab_lines.py"
spec = importlib.util.spec_from_file_location("ab_lines", SCRIPT)
ab_lines = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ab_lines)


def _suite_file(path, decode_ms, prefill_ms, tok_s):
    lines = [{"suite": "s", "config": "c", "startup_s": 1.0},
             {"suite": "s", "kind": "latency", "batch_size": 1, "input_len": 128,
              "output_len": 128, "decode_ms_per_step": decode_ms, "prefill_ms": 2.0},
             {"suite": "s", "kind": "latency", "batch_size": 1, "input_len": 2048,
              "output_len": 2, "decode_ms_per_step": 9.9, "prefill_ms": prefill_ms},
             {"suite": "s", "kind": "throughput", "output_tok_per_s": tok_s}]
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    return str(path)


def test_rows_are_tagged_and_tabled_by_tree(tmp_path, capsys):
    out = tmp_path / "ab.jsonl"
    for tree, args in (("new", (0.99, 8.4, 50316.0)), ("base", (1.02, 8.6, 49648.0))):
        ab_lines.main([_suite_file(tmp_path / f"{tree}.jsonl", *args), tree, "1"])
        with out.open("a") as f:
            f.write(capsys.readouterr().out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["row"], r["tree"], r["value"]) for r in rows[:3]] == [
        ("s b1 in128", "new", 0.99), ("s b1 in2048 prefill", "new", 8.4),
        ("s throughput", "new", 50316.0)]
    tput = tmp_path / "tput.jsonl"  # run_gpu.sh's lite bench lines join the table
    tput.write_text(json.dumps({"run": "qwen3-0.6b defaults new 1", "output_tok_per_s": 25011})
                    + "\n" + json.dumps({"run": "qwen3-0.6b defaults warm", "output_tok_per_s": 1})
                    + "\n")
    table = ab_lines.table([str(out), str(tput)]).splitlines()
    assert "| s b1 in128 | ms/step | 0.99 | 1.02 |" in table
    assert "| s b1 in2048 prefill | ms | 8.4 | 8.6 |" in table
    assert "| qwen3-0.6b defaults (lite bench throughput) | tok/s | 25,011 | - |" in table
    assert len(table) == 6  # header, rule, three suite rows, one throughput row
