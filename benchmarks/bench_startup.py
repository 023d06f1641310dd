"""Start-up to ready, by phase, in fresh processes with a cold and then a warm Triton cache.

    python benchmarks/bench_startup.py [--model benchmarks/configs/tinyllama-1.1b]
        [--warm-runs 2] [--profile] [--latency] [--no-pycache] [--bytecode-first]
        [--out results.jsonl] [--engine JSON] [--env KEY=VALUE[,KEY=VALUE]] ...

Each run is a new interpreter (imports and CUDA initialisation count) sharing one temporary
TRITON_CACHE_DIR and Python bytecode cache (PYTHONPYCACHEPREFIX: the GPU image writes no .pyc
files, so without it every start compiles every module's source): the first run compiles every
kernel and module (cold), the later ones find them on disk (warm). ``--no-pycache`` measures
the environment as it is. ``--bytecode-first`` adds a run with a throwaway Triton cache before
the cold one, so the cold run finds bytecode as `pip install` leaves it and an empty Triton cache
(reported as ``cold_triton``). Each ``--env`` repeats the cold and warm runs with those
environment variables and a Triton cache of their own (e.g. ``--env LITEVLLM_PRECOMPILE=0``
measures start-up without the parallel kernel compile in the same call). A run prints one JSON line: ``total_s`` (imports to ready), its
phases, the first request after ready (1 prompt, 8 tokens) and ``modules`` (how many were
imported by ready). Phases come from wrapping engine functions, so the script also times
versions of LitevLLM that predate it:

- ``import``: torch and litevllm; ``cuda_init``: the CUDA context;
- ``config``: plugin discovery, checkpoint format and config, up to building the ops;
- ``model``: ops, attention backend, model construction;
- ``weights``: dummy weights (``load_format="dummy"``), ``kv_profile``: the peak-memory prefill,
  ``kv_alloc``: the KV cache, ``graph_capture``: CUDA graphs; ``other``: the rest.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

DEFAULT_MODEL = os.path.join(os.path.dirname(__file__), "configs", "tinyllama-1.1b")


# imports an engine start should never need (seconds each on large environments): a run reports
# who imported any of them by ready (``heavy_imports``: the innermost frames outside importlib
# and the innermost litevllm one; a look-up without import, find_spec, is dropped)
HEAVY = ("torch._dynamo", "torch.distributed.fsdp", "torch.distributed.tensor", "accelerate",
         "torch._higher_order_ops.triton_kernel_wrap", "transformers.activations",
         "transformers.models.auto.modeling_auto", "transformers.generation.utils", "sympy",
         "torchvision", "torchvision.ops", "transformers.image_utils")


def watch_imports(found: dict) -> None:
    import importlib.abc
    import traceback

    class Watch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name in HEAVY and name not in found:
                frames = [f for f in traceback.extract_stack()[:-1] if "importlib" not in f.filename]
                ours = [f for f in frames if "litevllm" in f.filename and "bench_" not in f.filename]
                where = frames[-3:] + ours[-1:]
                found[name] = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno}" for f in where]
            return None
    sys.meta_path.insert(0, Watch())


SLOW_COMPILE_S = 0.1  # a lookup this slow compiled (a disk-cache hit takes milliseconds)


def child(model: str, engine_kw: dict, profile: bool, latency: bool,
          profile_out: str | None = None) -> dict:
    t_start = time.perf_counter()
    heavy: dict[str, list[str]] = {}
    watch_imports(heavy)
    import torch

    import litevllm.engine.engine as engine_mod
    from litevllm import LLM, SamplingParams
    from litevllm.engine.model_runner import ModelRunner
    t_import = time.perf_counter()
    if torch.cuda.is_available():
        torch.empty(1, device="cuda")
        torch.cuda.synchronize()
    t_cuda = time.perf_counter()

    marks: dict[str, list[float]] = {}
    depth = {"n": 0}

    def wrap(owner, attr, name):
        fn = getattr(owner, attr)

        def timed(*a, **k):
            top = depth["n"] == 0  # allocate_kv_cache also runs inside the profile
            depth["n"] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                depth["n"] -= 1
                if top:
                    marks.setdefault(name, [t0, 0.0])[1] += time.perf_counter() - t0
        setattr(owner, attr, timed)

    wrap(engine_mod, "Ops", "model")  # only its start time is used
    wrap(engine_mod, "init_dummy_weights", "weights")
    wrap(ModelRunner, "profile_peak_memory", "kv_profile")
    wrap(ModelRunner, "allocate_kv_cache", "kv_alloc")
    wrap(ModelRunner, "capture_cuda_graphs", "graph_capture")

    precompiled = {}
    try:  # the parallel kernel compile inside kv_profile (versions that have it)
        from litevllm.engine.precompile import Precompiler
        compile_pending = Precompiler.compile_pending

        def timed_compile(self, *a, **k):
            t1 = time.perf_counter()
            n, eager = len(self.pending), self.pool is not None  # started with the engine
            done = compile_pending(self, *a, **k)
            precompiled.update(variants=n, compiled=done, met=self.seen, eager_pool=eager,
                               workers=self.workers, s=round(time.perf_counter() - t1, 3))
            return done
        Precompiler.compile_pending = timed_compile
    except ImportError:
        pass

    jit: list = []  # every kernel load or compile (Triton's _do_compile), with its phase
    try:
        from triton.runtime.jit import JITFunction
        do_compile = JITFunction._do_compile

        def timed_do_compile(fn, key, *a, **k):
            t1 = time.perf_counter()
            try:
                return do_compile(fn, key, *a, **k)
            finally:
                jit.append((fn.fn.__qualname__, t1, time.perf_counter() - t1))
        JITFunction._do_compile = timed_do_compile  # the dry pass saves and restores this one
    except ImportError:
        pass
    builds: list = []  # C modules Triton builds with the system compiler (launchers, utils)
    try:
        import triton.runtime.build as triton_build
        build = triton_build._build

        def timed_build(name, *a, **k):
            t1 = time.perf_counter()
            try:
                return build(name, *a, **k)
            finally:
                builds.append((name, t1, time.perf_counter() - t1))
        triton_build._build = timed_build
    except (ImportError, AttributeError):
        pass

    prof = None
    if profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    llm = LLM(model, load_format="dummy", **engine_kw)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t_ready = time.perf_counter()
    modules = len(sys.modules)
    if prof is not None:
        prof.disable()
    llm.generate([{"prompt_token_ids": list(range(3, 67))}],
                 SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    t_first = time.perf_counter()

    durations = {k: v[1] for k, v in marks.items() if k != "model"}
    phases = {"import": t_import - t_start, "cuda_init": t_cuda - t_import}
    model_start = marks.get("model", [t0])[0]
    weights_start = marks.get("weights", [t_ready])[0]
    phases["config"] = model_start - t0
    phases["model"] = weights_start - model_start
    phases.update(durations)
    llm_s = t_ready - t0
    phases["other"] = llm_s - sum(v for k, v in phases.items()
                                  if k not in ("import", "cuda_init"))
    def phase_of(t):
        for name, (start, dur) in marks.items():
            if name != "model" and start <= t <= start + dur:
                return name
        return "config" if t < model_start else "ready" if t > t_ready else "other"
    slow = [(name, phase_of(t), round(d, 3)) for name, t, d in jit if d >= SLOW_COMPILE_S]
    result = {"total_s": t_ready - t_start, "llm_s": llm_s,
              "first_request_s": t_first - t_ready,
              "phases_s": {k: round(v, 3) for k, v in phases.items()},
              "graphs": len(llm.engine.runner.graphs), "num_blocks": llm.engine.num_blocks,
              "modules": modules, "precompile": precompiled,
              # kernel lookups, and those slow enough to be compiles (name, phase, s)
              "jit": {"lookups": len(jit), "lookup_s": round(sum(d for *_, d in jit), 3),
                      "compiles": slow},
              "c_builds": [(name, phase_of(t), round(d, 3)) for name, t, d in builds],
              "heavy_imports": {k: v for k, v in heavy.items() if k in sys.modules}}
    if latency:  # decode speed of the same engine: batch 1 and 128, 128 in, 128 out
        from litevllm.bench import measure_latency
        for bs in (1, 128):
            r = measure_latency(llm, bs, 128, 128)
            result[f"latency_b{bs}"] = {k: r[k] for k in ("prefill_ms", "decode_ms_per_step")}
    if prof is not None:
        import io
        import pstats
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(40)
        if profile_out:  # the whole profile, for pstats
            prof.dump_stats(profile_out)
        result["profile"] = buf.getvalue()
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--warm-runs", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="cProfile the last warm run")
    p.add_argument("--latency", action="store_true",
                   help="the last warm run also measures decode latency (batch 1 and 128)")
    p.add_argument("--no-pycache", action="store_true",
                   help="leave Python's bytecode caching as the environment has it")
    p.add_argument("--out", help="append the JSON lines here too")
    p.add_argument("--engine", default="{}", help="engine options as JSON")
    p.add_argument("--bytecode-first", action="store_true",
                   help="write bytecode in a run of its own first: the cold run is Triton-cold only")
    p.add_argument("--env", action="append", default=[],
                   help="KEY=VALUE[,KEY=VALUE]: the cold and warm runs again with these set")
    p.add_argument("--profile-out", help="with --profile: the profiled run's cProfile stats "
                   "here and its -X importtime lines in FILE.imports")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.profile_out and not a.profile:
        p.error("--profile-out needs --profile")
    engine_kw = json.loads(a.engine)
    if a.child:
        print(json.dumps(child(a.model, engine_kw, a.profile, a.latency, a.profile_out)), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="litevllm-triton-cache-") as cache:
        env = {**os.environ, "TRITON_CACHE_DIR": os.path.join(cache, "triton")}
        if not a.no_pycache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = os.path.join(cache, "pycache")
        cold = ["cold_triton" if a.bytecode_first else "cold"] + ["warm"] * a.warm_runs
        runs = [("bytecode", "")] * a.bytecode_first + [(kind, "") for kind in cold] \
            + [(kind, extra) for extra in a.env for kind in cold]
        for i, (kind, extra) in enumerate(runs):
            cmd = [sys.executable, __file__, "--child", "--model", a.model, "--engine", a.engine]
            profiled = i == len(runs) - 1 - len(cold) * len(a.env)  # default's last run
            if profiled:
                cmd += ["--profile"] * a.profile + ["--latency"] * a.latency
                if a.profile_out:  # its cProfile stats, and -X importtime's lines beside them
                    cmd[1:1] = ["-X", "importtime"]
                    cmd += ["--profile-out", a.profile_out]
            run_env = {**env, **dict(kv.split("=", 1) for kv in extra.split(",") if kv),
                       "TRITON_CACHE_DIR": os.path.join(cache, f"triton-{a.env.index(extra)}"
                                                        if extra else "triton")}
            if kind == "bytecode":
                run_env["TRITON_CACHE_DIR"] = os.path.join(cache, "triton-throwaway")
            t0 = time.perf_counter()
            out = subprocess.run(cmd, env=run_env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if out.returncode != 0:
                sys.exit(f"{kind} run failed:\n{out.stderr[-3000:]}")
            if profiled and a.profile_out:
                with open(a.profile_out + ".imports", "w") as f:
                    f.write(out.stderr)
            result = {"run": kind, **({"env": extra} if extra else {}),
                      "pycache": not a.no_pycache, "process_wall_s": round(wall, 3),
                      **json.loads(out.stdout.strip().splitlines()[-1])}
            profile = result.pop("profile", None)
            line = json.dumps(result)
            print(line, flush=True)
            if profile:
                print(profile, file=sys.stderr)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main()
