"""Host-side (CPU) costs of the engine, each against its previous form in the same run.

1. Decode attention on the torch backend at batch 256: the per-sequence reference loop
   (`paged_attention_ref`, what the backend used before) vs the batched `paged_decode_attention`.
2. A whole engine decode step at batch 256 (tiny Llama, dummy weights, contexts 33-96) with the
   backend on each of those two attention paths.
3. Building a decode step's block tables at batch 256, 62 blocks per sequence: padded Python
   lists through `torch.tensor` (before) vs the runner's cached per-sequence rows.
4. Host ms per engine decode step at 64, 256, 1024 and 2048 running sequences with a no-op
   model (zero logits over a 32-token vocabulary), so only scheduler, block manager, input
   preparation, sampler and output handling count. Flat = no O(n^2) host work. Also per
   decode position with 16 steps per sync at 256 and 1024; each also with async scheduling
   (``_async``). Thread CPU time, median step.

    python benchmarks/bench_host.py            # all of the above
    python benchmarks/bench_host.py steps      # only 4; `steps --profile 1024` prints a cProfile
    python benchmarks/bench_host.py gc         # full-collection pauses, imports frozen or not
    python benchmarks/bench_host.py prepare    # step inputs: a 2,048-token prompt, mixed, decode
"""
import json
import time

import torch

from litevllm.attention.backend import AttentionSpec
from litevllm.attention.torch_backend import paged_attention_ref, paged_decode_attention
from litevllm.engine.block_tables import BlockTableRows
from litevllm.engine.model_runner import ModelRunner


def timed(fn, reps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1e3


def attention(batch=256, ctx=500, block=16, hkv=2, heads=4, dim=16):
    g = torch.Generator().manual_seed(0)
    nblk = -(-ctx // block)
    k_cache = torch.randn(batch * nblk, block, hkv, dim, generator=g)
    v_cache = torch.randn_like(k_cache)
    tables = torch.randperm(batch * nblk, generator=g).view(batch, nblk).int()
    lens = [ctx - i % 50 for i in range(batch)]
    q = torch.randn(batch, heads, dim, generator=g)
    spec = AttentionSpec(heads, hkv, dim, scale=dim ** -0.5)
    loop = timed(lambda: paged_attention_ref(q, k_cache, v_cache, tables, [1] * batch, lens, spec), 5)
    batched = timed(lambda: paged_decode_attention(q, k_cache, v_cache, tables, torch.tensor(lens),
                                                   max(lens), spec), 5)
    return {"decode_attention_per_seq_loop_ms": loop, "decode_attention_batched_ms": batched,
            "speedup": loop / batched}


def block_tables(batch=256, blocks=62):
    class Seq:
        def __init__(self, i):
            self.seq_id = i
            self.block_table = list(range(i * blocks, (i + 1) * blocks))
            self.is_finished = False
    seqs = [Seq(i) for i in range(batch)]
    runner = ModelRunner.__new__(ModelRunner)
    runner.table_rows = BlockTableRows(128, 2 * batch + 1)

    def lists():
        width = max(len(s.block_table) for s in seqs)
        return torch.tensor([s.block_table + [0] * (width - len(s.block_table)) for s in seqs],
                            dtype=torch.int32)
    assert torch.equal(lists(), runner._block_tables(seqs))
    before = timed(lists, 50)
    after = timed(lambda: runner._block_tables(seqs), 50)
    return {"block_tables_from_lists_ms": before, "block_tables_cached_rows_ms": after,
            "speedup": before / after}


def engine_step(batch=256, steps=30):
    import tempfile

    from transformers import LlamaConfig

    from litevllm import LLM, SamplingParams
    from litevllm.attention import torch_backend

    with tempfile.TemporaryDirectory() as d:
        cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=512)
        cfg.architectures = ["LlamaForCausalLM"]
        cfg.save_pretrained(d)
        result = {}
        for name, batched in (("per_seq_loop", False), ("batched", True)):
            llm = LLM(d, load_format="dummy", max_num_seqs=batch)
            engine = llm.engine
            if not batched:  # the backend's forward before batching: always the reference loop
                def forward(self, spec, q, k, v, kv_cache, meta):
                    torch_backend.reshape_and_cache(k, v, kv_cache[0], kv_cache[1], meta.slot_mapping)
                    return torch_backend.paged_attention_ref(
                        q, kv_cache[0], kv_cache[1], meta.block_tables, meta.query_lens_cpu,
                        meta.seq_lens_cpu, spec).flatten(1)
                engine.runner.attn.forward = forward.__get__(engine.runner.attn)
            params = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
            for i in range(batch):
                engine.add_request(f"r{i}", {"prompt_token_ids": [1 + (i * 7 + j) % 500
                                                                  for j in range(32)]}, params)
            engine.step()
            engine.step()
            t = time.perf_counter()
            for _ in range(steps):
                engine.step(unfinished_outputs=False)
            result[f"engine_step_{name}_ms"] = (time.perf_counter() - t) / steps * 1e3
        result["speedup"] = result["engine_step_per_seq_loop_ms"] / result["engine_step_batched_ms"]
        return result


class NoopModel:
    """Stands in for the model: no compute, zero logits, so a step costs only host work."""

    def __init__(self, vocab: int):
        self.vocab = vocab

    def __call__(self, input_ids, positions, kv_caches, meta):
        return torch.zeros(input_ids.shape[0], 1)

    def compute_logits(self, hidden):
        return torch.zeros(hidden.shape[0], self.vocab)


def _noop_engine(num_seqs: int, prompt_len: int = 32, max_model_len: int = 1024, **engine_kw):
    """An engine with ``num_seqs`` running sequences past their prompts and a no-op forward."""
    import tempfile

    from transformers import LlamaConfig

    from litevllm import LLM, SamplingParams

    with tempfile.TemporaryDirectory() as d:
        cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096)
        cfg.architectures = ["LlamaForCausalLM"]
        cfg.save_pretrained(d)
        # blocks for every sequence at full length: no preemption while steps are timed
        llm = LLM(d, load_format="dummy", max_num_seqs=num_seqs + 1, max_model_len=max_model_len,
                  max_num_batched_tokens=max(8192, num_seqs * prompt_len),
                  num_gpu_blocks_override=(num_seqs + 1) * max_model_len // 16 + 1, **engine_kw)
    engine = llm.engine
    engine.runner.model = NoopModel(cfg.vocab_size)
    params = SamplingParams(temperature=0, max_tokens=max_model_len - prompt_len - 1,
                            ignore_eos=True)
    for i in range(num_seqs):
        engine.add_request(f"r{i}", {"prompt_token_ids": [1 + (i + j) % 30 for j in range(prompt_len)]},
                           params)
    while engine.scheduler.waiting or any(not s.num_output_tokens for s in engine.scheduler.running):
        engine.step(unfinished_outputs=False)
    assert len(engine.scheduler.running) == num_seqs
    for _ in range(3):
        engine.step(unfinished_outputs=False)
    return engine


def host_step(num_seqs: int, steps: int = 40, prompt_len: int = 32, profile: bool = False,
              **engine_kw) -> float:
    """Median host CPU ms per decode step with ``num_seqs`` running sequences and a no-op forward."""
    engine = _noop_engine(num_seqs, prompt_len, **engine_kw)
    if profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.enable()
    # CPU time of this thread (the host work itself; wall time on a shared, loaded machine
    # also counts the time slices other processes take), median over the steps
    times = []
    for _ in range(steps):
        t = time.thread_time()
        engine.step(unfinished_outputs=False)
        times.append(time.thread_time() - t)
    ms = sorted(times)[len(times) // 2] * 1e3
    if profile:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return ms


def host_steps(sizes=(64, 256, 1024, 2048)) -> dict:
    result = {f"host_ms_per_step_{n}_seqs": host_step(n) for n in sizes}
    per_seq = [result[f"host_ms_per_step_{n}_seqs"] / n * 1e3 for n in sizes]
    result["us_per_seq_min_max"] = [min(per_seq), max(per_seq)]
    for n in (256, 1024):  # async scheduling (the CUDA default): the same work, split in two
        result[f"host_ms_per_step_{n}_seqs_async"] = host_step(n, async_scheduling=True)
    for n in (256, 1024):  # multi-step decode (the CUDA-graph default): host ms per position
        result[f"host_ms_per_position_16_steps_{n}_seqs"] = \
            host_step(n, steps=10, num_scheduler_steps=16) / 16
        result[f"host_ms_per_position_16_steps_{n}_seqs_async"] = \
            host_step(n, steps=10, num_scheduler_steps=16, async_scheduling=True) / 16
    return result


def prepare_costs(prompt: int = 2048, decodes: int = 255, reps: int = 300) -> dict:
    """Host CPU µs of ``runner.prepare`` (the step's inputs; hot loop, median of 5 rounds): a
    ``prompt``-token prompt alone, beside ``decodes`` decode rows (a mixed step), and the
    decode rows alone."""
    from litevllm import SamplingParams
    engine = _noop_engine(decodes, max_model_len=prompt + 64)
    runner, got = engine.runner, {}
    real = runner.prepare

    def timed_us(batch):
        rounds = []
        for _ in range(5):
            t = time.thread_time()
            for _ in range(reps):
                real(batch)
            rounds.append((time.thread_time() - t) / reps * 1e6)
        return sorted(rounds)[2]

    def capture(batch):  # timed before the step runs (prepare reads the sequences' state)
        prompt_seq = [s for s, n in zip(batch.seqs, batch.num_new_tokens) if n > 1]
        assert len(prompt_seq) == 1 and len(batch.seqs) == decodes + 1, "not one mixed step"
        others = [s for s in batch.seqs if s is not prompt_seq[0]]
        got.update(prepare_us_prompt=timed_us(batch.subset(prompt_seq)),
                   prepare_us_mixed=timed_us(batch), prepare_us_decode=timed_us(batch.subset(others)))
        return real(batch)
    runner.prepare = capture
    engine.add_request("prompt", {"prompt_token_ids": [1 + j % 30 for j in range(prompt)]},
                       SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    engine.step(unfinished_outputs=False)
    runner.prepare = real
    return {**got, "prompt_tokens": prompt, "decode_rows": decodes}


def gc_pauses(num_seqs: int = 1024, steps: int = 400) -> dict:
    """Full (generation-2) collections during ``steps`` decode steps, wall ms each: as the
    engine runs (imports frozen before it starts), then with ``gc.unfreeze()`` (as before)."""
    import gc
    engine = _noop_engine(num_seqs)
    pauses, start = [], []
    def timer(phase, info):
        if info["generation"] != 2:
            return
        if phase == "start":
            start.append(time.perf_counter())
        else:
            pauses.append((time.perf_counter() - start.pop()) * 1e3)
    gc.callbacks.append(timer)
    result = {}
    for name in ("frozen", "unfrozen"):
        if name == "unfrozen":
            gc.unfreeze()
        pauses.clear()
        t = time.perf_counter()
        for _ in range(steps):
            engine.step(unfinished_outputs=False)
        result[name] = {"wall_ms_per_step": (time.perf_counter() - t) / steps * 1e3,
                        "full_collections": len(pauses),
                        "ms_each_median": sorted(pauses)[len(pauses) // 2] if pauses else 0.0}
    gc.callbacks.remove(timer)
    return {"num_seqs": num_seqs, "steps": steps, **result}


if __name__ == "__main__":
    import sys
    if sys.argv[1:2] == ["gc"]:
        torch.set_num_threads(1)
        print(json.dumps(gc_pauses(), indent=2))
        sys.exit()
    if sys.argv[1:2] == ["prepare"]:
        torch.set_num_threads(1)
        print(json.dumps(prepare_costs(), indent=2))
        sys.exit()
    if sys.argv[1:2] == ["steps"]:
        torch.set_num_threads(1)  # host work is one thread; spare the shared cores the spinning
        if "--profile" in sys.argv:
            n = int(sys.argv[sys.argv.index("--profile") + 1])
            print(f"{n} seqs: {host_step(n, profile=True):.3f} ms/step")
        else:
            print(json.dumps({"threads": torch.get_num_threads(), **host_steps()}, indent=2))
        sys.exit()
    torch.set_num_threads(torch.get_num_threads())
    print(json.dumps({"threads": torch.get_num_threads(), **attention()}, indent=2))
    print(json.dumps(engine_step(), indent=2))
    print(json.dumps(block_tables(), indent=2))
