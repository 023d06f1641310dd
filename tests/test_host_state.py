"""The engine's incremental host state gives what rebuilding it each step would: block-table
rows (new blocks written in one store per step) equal the padded tables, in random operations
and at every step of engines that preempt, schedule asynchronously and run several steps per
sync; the output layer's path without a tokenizer gives the same tokens and logprobs."""
import random

import pytest
import torch

from litevllm import LLM, SamplingParams
from litevllm.engine.block_tables import BlockTableRows
from litevllm.engine.host_tensors import to_device_packed
from litevllm.engine.model_runner import token_rows


def padded(tables: list[list[int]]) -> torch.Tensor:
    width = max([1] + [len(t) for t in tables])
    return torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32)


class Seq:
    def __init__(self, seq_id):
        self.seq_id, self.block_table = seq_id, []


def random_spans(rng, min_count: int = 0):
    """(block size, tables, starts, counts): spans that start and end anywhere inside a block
    (chunks, prefix hits, decode rows; empty ones with ``min_count`` 0)."""
    bs = rng.choice([1, 2, 16, 32])
    tables, starts, counts = [], [], []
    for _ in range(rng.randint(1, 6)):
        tables.append(rng.sample(range(500), rng.randint(1, 40)))
        starts.append(rng.randrange(len(tables[-1]) * bs))
        counts.append(rng.randint(min_count, len(tables[-1]) * bs - starts[-1]))
    return bs, tables, starts, counts


@pytest.mark.parametrize("seed", range(5))
def test_token_rows_equal_the_per_token_formula(seed):
    """Positions and slots from tensor ops equal the per-token formula, for batches of spans
    that start and end anywhere inside a block (chunks, prefix hits, decode rows, empty)."""
    rng = random.Random(seed)
    for _ in range(100):
        bs, tables, starts, counts = random_spans(rng)
        owner, first, pos, slots = token_rows(padded(tables), starts, counts, bs)
        want = [(i, p, t[p // bs] * bs + p % bs) for i, (t, s, n) in
                enumerate(zip(tables, starts, counts)) for p in range(s, s + n)]
        assert list(zip(owner.tolist(), pos.tolist(), slots.tolist())) == want
        assert first.tolist() == [sum(counts[:i]) for i in range(len(counts))]
        assert slots.dtype == pos.dtype == torch.int64


def random_step(rng, pad_rows: int = 0, pad_seqs: int = 0):
    """A step's metadata (sequences at any start, chunks, decode rows) padded as whole-step
    graphs pad it: ``pad_seqs`` sequences with no rows and stale lengths and tables, and
    ``pad_rows`` rows past the step's tokens. Returns (qsl, seq_lens, tables, block size,
    want): want lists each real row's (position, slot) by the per-token formula."""
    bs, tables, starts, counts = random_spans(rng, min_count=1)
    n, width = sum(counts), max(map(len, tables))
    qsl = [sum(counts[:i]) for i in range(len(counts) + 1)] + [n] * pad_seqs
    lens = [s + c for s, c in zip(starts, counts)] + [rng.randint(0, 10**6)] * pad_seqs
    tables += [[rng.randint(0, 10**6)] * width] * pad_seqs
    want = [(p, t[p // bs] * bs + p % bs)
            for t, s, c in zip(tables, starts, counts) for p in range(s, s + c)]
    return (torch.tensor(qsl, dtype=torch.int32), torch.tensor(lens, dtype=torch.int32),
            padded(tables), bs, want + [(0, -1)] * pad_rows)


@pytest.mark.parametrize("seed", range(5))
def test_positions_and_slots_op_gives_the_per_token_formula(seed):
    """The op behind prefill and mixed steps' rows (computed on the device, inside whole-step
    graphs): real rows get the formula's position and slot, padding rows (past the step's
    tokens, or of padding sequences) position 0 and slot -1."""
    from litevllm.ops.torch_ops import positions_and_slots
    rng = random.Random(seed)
    for _ in range(100):
        qsl, lens, tables, bs, want = random_step(rng, rng.randint(0, 9), rng.randint(0, 3))
        pos = torch.full((len(want),), 7)
        slots = torch.full((len(want),), 7)
        positions_and_slots(qsl, lens, tables, bs, pos, slots)
        assert list(zip(pos.tolist(), slots.tolist())) == want
    pos, slots = torch.full((3,), 7), torch.full((3,), 7)  # no sequences: all padding
    positions_and_slots(torch.zeros(1, dtype=torch.int32), torch.zeros(0, dtype=torch.int32),
                        torch.zeros(0, 1, dtype=torch.int32), 16, pos, slots)
    assert pos.tolist() == [0] * 3 and slots.tolist() == [-1] * 3


def test_prepare_copies_prompt_and_output_ids_and_the_device_gives_rows(llama_dir):
    """A mixed step's ids come from the prompt array and the token list on either side of
    the prompt's end (a recompute after preemption crosses it); ``rows`` then gives each row's
    position and slot by the formula."""
    from litevllm.engine.scheduler import ScheduledBatch
    from litevllm.engine.sequence import Sequence
    runner = LLM(str(llama_dir), block_size=8, max_num_seqs=8, seed=0).engine.runner
    params, seqs, blocks = SamplingParams(max_tokens=50), [], iter(range(100))
    # (prompt length, output tokens, computed, scheduled): recompute of prompt + outputs, a
    # chunk inside the prompt, a decode row, a chunk across the prompt's end
    for i, (p, out, done, n) in enumerate([(20, 5, 0, 25), (30, 0, 16, 10), (8, 3, 10, 1),
                                           (12, 4, 8, 8)]):
        s = Sequence(i, f"r{i}", [100 * i + j for j in range(p)], params)
        for j in range(out):
            s.append_token(100 * i + 50 + j)
        s.num_computed_tokens = done
        s.block_table = [next(blocks) for _ in range(-(-(done + n) // 8))]
        seqs.append((s, n))
    inputs = runner.prepare(ScheduledBatch([s for s, _ in seqs], [n for _, n in seqs]))
    assert inputs.positions is None and inputs.meta.slot_mapping is None
    want = [(s.token_ids[p], p, s.block_table[p // 8] * 8 + p % 8)
            for s, n in seqs for p in range(s.num_computed_tokens, s.num_computed_tokens + n)]
    runner.rows(inputs)
    assert list(zip(inputs.input_ids.tolist(), inputs.positions.tolist(),
                    inputs.meta.slot_mapping.tolist())) == want


def test_int_tensor_shares_an_array_of_its_type():
    from array import array

    from litevllm.engine.host_tensors import int_tensor
    a = array("q", [3, 1, 2])
    t = int_tensor(a)
    a[0] = 7
    assert t.tolist() == [7, 1, 2]  # shared memory, no copy
    assert int_tensor(array("i", [4, 5])).tolist() == [4, 5]  # another type code: converted
    assert int_tensor([1, 2], torch.int32).dtype == torch.int32 and int_tensor([]).numel() == 0


def test_packed_copies_keep_values_dtypes_shapes():
    """(tests/gpu/test_engine_gpu.py checks the CUDA path: one copy, 16-byte-aligned views.)"""
    parts = [torch.arange(3), torch.arange(5, dtype=torch.int32), torch.zeros(0),
             torch.arange(6, dtype=torch.int32).view(2, 3), torch.tensor([True, False])]
    got = to_device_packed(parts, torch.device("cpu"))
    for p, g in zip(parts, got):
        assert torch.equal(p, g) and g.dtype == p.dtype and g.shape == p.shape
    with pytest.raises(ValueError, match="takes CPU tensors, got one on meta"):
        to_device_packed([torch.empty(2, device="meta")], torch.device("cpu"))


@pytest.mark.parametrize("seed", range(5))
def test_rows_equal_padded_tables_in_random_operations(seed):
    rng = random.Random(seed)
    rows = BlockTableRows(12, 3)          # few rows: they grow while in use
    live = [Seq(i) for i in range(6)]
    next_id = len(live)
    for _ in range(300):
        op = rng.random()
        seq = rng.choice(live)
        if op < 0.5:                                    # new blocks (appended in place)
            room = 12 - len(seq.block_table)
            seq.block_table.extend(rng.randrange(1000) for _ in range(min(room, rng.randint(1, 3))))
        elif op < 0.6:                                  # trimmed or freed: a new list
            seq.block_table = seq.block_table[:rng.randint(0, len(seq.block_table))]
        elif op < 0.7:                                  # finished: row released, a new one
            rows.release([seq.seq_id])
            live[live.index(seq)] = Seq(next_id)
            next_id += 1
        batch = rng.sample(live, rng.randint(1, len(live)))
        assert torch.equal(rows.gather(batch), padded([s.block_table for s in batch]))
    live[0].block_table.extend(range(13 - len(live[0].block_table)))
    with pytest.raises(ValueError, match="13 blocks is longer than the 12"):
        rows.gather(live)


PROMPTS = [list(range(5 + i, 5 + i + n)) for i, n in enumerate((3, 17, 40, 9, 26, 1, 33, 12))]
PARAMS = [SamplingParams(temperature=0, max_tokens=24, ignore_eos=True),
          SamplingParams(temperature=0.9, seed=5, max_tokens=19, logprobs=2),
          SamplingParams(n=2, temperature=0.8, seed=3, max_tokens=15, ignore_eos=True)]


@pytest.mark.parametrize("async_scheduling,steps", [(False, 1), (True, 1), (False, 4), (True, 4)])
def test_block_tables_at_every_step(llama_dir, llama_notok_dir, async_scheduling, steps):
    """Few KV blocks (preemption), chunked prefill, forks; with and without a tokenizer."""
    outs = []
    for path in (llama_dir, llama_notok_dir):
        llm = LLM(str(path), block_size=8, max_num_seqs=6, max_num_batched_tokens=24,
                  num_gpu_blocks_override=16, async_scheduling=async_scheduling,
                  num_scheduler_steps=steps, seed=0)
        table_rows, checked = llm.engine.runner.table_rows, []

        def gather(seqs, gather=table_rows.gather):
            got = gather(seqs)
            assert torch.equal(got, padded([s.block_table for s in seqs]))
            checked.append(len(seqs))
            return got
        table_rows.gather = gather
        prompts = [{"prompt_token_ids": p} for p in PROMPTS]
        out = llm.generate(prompts, [PARAMS[i % 3] for i in range(len(PROMPTS))])
        assert sum(o.metrics.num_preemptions for o in out) > 0 and len(checked) > 10
        assert not llm.engine.runner.table_rows.state
        outs.append([[(c.token_ids, c.finish_reason, c.logprobs) for c in o.outputs] for o in out])
    assert outs[0] == outs[1]


@pytest.mark.parametrize("batch,steps", [(3, 4), (5, 1), (8, 2)])
def test_decode_inputs_start_aligned(llama_dir, batch, steps):
    """Each decode step's views (ids, positions, slots, lengths) start 16-byte aligned for any
    batch size (Triton specialises on it; eager decodes would otherwise compile variants
    mid-serving) and hold the positions, slots and lengths of the formula."""
    llm = LLM(str(llama_dir), block_size=8, max_num_seqs=8, seed=0)
    engine = llm.engine
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    for i in range(batch):
        engine.add_request(f"r{i}", {"prompt_token_ids": list(range(3, 8 + 3 * i))}, params)
    while not all(s.num_output_tokens for r in engine.requests.values() for s in r.seqs):
        engine.step()
    seqs = list(engine.scheduler.running)
    for s in seqs:  # blocks for the steps ahead, as the scheduler allocates them
        while len(s.block_table) * 8 < s.num_tokens + steps:
            s.block_table.append(s.block_table[-1])
    runner = engine.runner
    inputs = runner._decode_inputs(seqs, steps)
    for j, inp in enumerate(inputs):
        meta = inp.meta
        for t in (inp.input_ids, inp.positions, meta.slot_mapping, meta.seq_lens,
                  meta.query_start_loc):
            assert t.data_ptr() % 16 == 0
        want_pos = [s.num_computed_tokens + j for s in seqs]
        assert inp.positions.tolist() == want_pos
        assert meta.seq_lens.tolist() == [p + 1 for p in want_pos]
        assert meta.slot_mapping.tolist() == [s.block_table[p // 8] * 8 + p % 8
                                              for s, p in zip(seqs, want_pos)]
    assert inputs[0].input_ids.tolist() == [s.token_ids[s.num_computed_tokens] for s in seqs]


def test_logit_rows_reach_the_lm_head(llama_dir):
    """A step's logit rows: sent with its inputs (one copy) when they are not a range, sliced
    when they are (a prompt's last token, decode rows); either way exactly those rows of the
    hidden states reach the lm_head."""
    llm = LLM(str(llama_dir), block_size=8, max_num_seqs=8, seed=0)
    runner, seen = llm.engine.runner, []
    pick = runner._logit_hidden

    def checked(hidden, inputs):
        got = pick(hidden, inputs)
        assert torch.equal(got, hidden[inputs.logit_rows])
        seen.append((len(inputs.logit_rows), inputs.logit_index is not None))
        return got
    runner._logit_hidden = checked
    plain = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    llm.generate({"prompt_token_ids": list(range(3, 20))}, plain)
    assert seen[0] == (1, False)  # the prompt's last row: a slice
    seen.clear()
    logprobs = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True, prompt_logprobs=1)
    llm.generate([{"prompt_token_ids": list(range(3, 12))}, {"prompt_token_ids": [5, 6, 7]},
                  {"prompt_token_ids": list(range(30, 40))}], [plain, logprobs, plain])
    assert seen[0] == (1 + 3 + 1, True)  # rows 8, 9-11, 21: gaps, so an index
