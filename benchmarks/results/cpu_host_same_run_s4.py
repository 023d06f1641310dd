"""Same-run comparison of `bench_host.host_step` on two cores: this checkout's and another
commit's (``git archive COMMIT core | tar -x -C DIR``), in alternating subprocesses (the box is
shared: medians over rounds). Sync and async scheduling at 256 and 1,024 sequences, and host
ms per position with 16 steps per sync; with ``tokenizer``, instead sync and async at 1,024
sequences with a tokenizer (litevllm.testing's byte-level BPE), so detokenization counts.

    python benchmarks/results/cpu_host_same_run_s4.py DIR/core [rounds] [tokenizer]
"""
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = ("import json, sys, torch; sys.path.insert(0, {bench!r}); torch.set_num_threads(1);"
       "from bench_host import host_step; print(json.dumps(host_step({n}, **{kw!r}) / {div}))")
CASES = [("sync", 256, {}, 1), ("sync", 1024, {}, 1),
         ("async", 256, {"async_scheduling": True}, 1),
         ("async", 1024, {"async_scheduling": True}, 1),
         ("16 steps/sync, per position", 256, {"steps": 10, "num_scheduler_steps": 16}, 16),
         ("16 steps/sync, per position", 1024, {"steps": 10, "num_scheduler_steps": 16}, 16)]


def tokenizer_cases() -> list:
    import tempfile

    from litevllm.testing import tiny_tokenizer
    path = tempfile.mkdtemp() + "/tokenizer"
    tiny_tokenizer(path).save_pretrained(path)
    return [("sync, tokenizer", 1024, {"tokenizer": path}, 1),
            ("async, tokenizer", 1024, {"tokenizer": path, "async_scheduling": True}, 1)]


def main(other_core: str, rounds: int, cases: list) -> None:
    results: dict = {}
    for _ in range(rounds):
        for name, core in (("other", other_core), ("this", None)):
            # the other core with this checkout's plugins: leave out the kernel plugin
            env = dict(os.environ, LITEVLLM_DISABLE_PLUGINS="triton")
            if core:
                env["PYTHONPATH"] = core
            for label, n, kw, div in cases:
                code = RUN.format(bench=os.path.dirname(HERE), n=n, kw=kw, div=div)
                out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                     capture_output=True, text=True)
                ms = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault(f"{label}, {n} seqs", {}).setdefault(name, []).append(ms)
    for case, by in results.items():
        print(json.dumps({"case": case, **{k: round(statistics.median(v), 3) for k, v in by.items()},
                          "runs": {k: [round(x, 3) for x in v] for k, v in by.items()}}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3,
         tokenizer_cases() if sys.argv[3:] == ["tokenizer"] else CASES)
