"""Host-side (CPU) costs of the engine, each against its previous form in the same run.

1. Decode attention on the torch backend at batch 256: the per-sequence reference loop
   (`paged_attention_ref`, what the backend used before) vs the batched `paged_decode_attention`.
2. A whole engine decode step at batch 256 (tiny Llama, dummy weights, contexts 33-96) with the
   backend on each of those two attention paths.
3. Building a decode step's block tables at batch 256, 62 blocks per sequence: padded Python
   lists through `torch.tensor` (before) vs the runner's cached per-sequence rows.

    python benchmarks/bench_host.py
"""
import json
import time

import torch

from litevllm.attention.backend import AttentionSpec
from litevllm.attention.torch_backend import paged_attention_ref, paged_decode_attention
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
    seqs = [Seq(i) for i in range(batch)]
    runner = ModelRunner.__new__(ModelRunner)
    runner.max_blocks_per_seq = 128
    runner.tables = {}

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


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    print(json.dumps({"threads": torch.get_num_threads(), **attention()}, indent=2))
    print(json.dumps(engine_step(), indent=2))
    print(json.dumps(block_tables(), indent=2))
