"""The corrected `bench_host.host_step` on whichever core is importable (for a same-run
comparison of two commits: run it with PYTHONPATH=<other checkout>/core)."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_host import host_step  # noqa: E402

print(json.dumps({n: host_step(n) for n in (256, 1024)}),
      json.dumps({n: host_step(n, steps=10, num_scheduler_steps=16) / 16 for n in (256, 1024)}))
