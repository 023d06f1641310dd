"""n-gram speculative decoding: greedy output identical to plain decoding, rejection sampling
that samples the target distribution, no unverified KV in the prefix cache, statistics."""
import pytest
import torch

from litevllm import LLM, SamplingParams
from litevllm.engine.ngram_proposer import NgramProposer
from litevllm.engine.sampler import Sampler
from litevllm.engine.sequence import Sequence

SPEC = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3,
        "prompt_lookup_min": 1, "min_acceptance_rate": 0.01}
LOOP = [7, 8, 9, 10, 11, 12] * 6                # repetitive: the drafts find matches
PROMPTS = [{"prompt_token_ids": p} for p in (LOOP, list(range(20, 45)), LOOP[:9] + [40] * 10)]


@pytest.fixture(scope="module")
def engines(llama_dir):
    common = dict(block_size=8, max_num_seqs=8, seed=0)
    plain = LLM(str(llama_dir), **common)
    # a grounded prompt: a passage, the model's own continuation of it, the passage again
    base = list(range(50, 80))
    cont = plain.generate({"prompt_token_ids": base}, SamplingParams(temperature=0, max_tokens=30,
                                                                     ignore_eos=True))
    PROMPTS.append({"prompt_token_ids": base + cont[0].outputs[0].token_ids + base})
    return plain, LLM(str(llama_dir), speculative_config=SPEC, **common)


def run(llm, params):
    return [[(c.token_ids, c.text, c.finish_reason) for c in o.outputs]
            for o in llm.generate(PROMPTS, params)]


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0, max_tokens=40, ignore_eos=True),
    SamplingParams(temperature=0, max_tokens=40),
    SamplingParams(temperature=0, max_tokens=30, stop=["e"], ignore_eos=True),
    SamplingParams(temperature=0, max_tokens=25, n=2, ignore_eos=True),
], ids=["greedy", "eos", "stop-string", "n2"])
def test_greedy_output_identical_to_plain_decoding(engines, params):
    plain, spec = engines
    before = spec.engine.stats()["spec_num_draft_tokens"]
    assert run(spec, params) == run(plain, params)
    stats = spec.engine.stats()
    assert stats["spec_num_draft_tokens"] > before  # drafts were verified
    assert stats["num_free_blocks"] == spec.engine.num_blocks


@pytest.mark.parametrize("wrong_every", [0, 3])
def test_accepted_drafts_save_steps(engines, monkeypatch, wrong_every):
    """An oracle proposer (the plain greedy output, every ``wrong_every``-th token spoiled):
    the output stays the same, the accepted tokens are counted and the steps drop."""
    plain, spec = engines
    params = SamplingParams(temperature=0, max_tokens=33, ignore_eos=True)
    prompt = PROMPTS[1]["prompt_token_ids"]
    oracle = prompt + plain.generate(PROMPTS[1], params)[0].outputs[0].token_ids

    def propose(tokens, k):
        draft = oracle[len(tokens):len(tokens) + k]
        return [t + 1 if wrong_every and (len(tokens) + i) % wrong_every == 0 else t
                for i, t in enumerate(draft)]
    eng = spec.engine
    monkeypatch.setattr(eng.spec.proposer, "propose", propose)
    eng.spec.paused, eng.spec.rate = 0, 1.0  # earlier tests' low acceptance paused drafting
    before = eng.stats()
    eng.add_request("oracle", PROMPTS[1], params)
    steps, final = 0, None
    while eng.has_unfinished_requests():
        steps += 1
        final = eng.step()[0]
    assert prompt + final.outputs[0].token_ids == oracle
    stats = eng.stats()
    drafted = stats["spec_num_draft_tokens"] - before["spec_num_draft_tokens"]
    accepted = stats["spec_num_accepted_tokens"] - before["spec_num_accepted_tokens"]
    per_pos = [a - b for a, b in zip(stats["spec_num_accepted_tokens_per_pos"],
                                     before["spec_num_accepted_tokens_per_pos"])]
    assert sum(per_pos) == accepted and per_pos == sorted(per_pos, reverse=True)
    if wrong_every:
        assert 0 < accepted < drafted and steps < 33
    else:
        # the prefill's token, then 4 drafts + 1 per step; the last step's draft is cut to 1
        assert accepted == drafted == 4 * 6 + 1 and steps == 1 + 7
        assert per_pos == [7, 6, 6, 6]
    assert stats["spec_num_draft_tokens"] >= stats["spec_num_accepted_tokens"] > 0
    assert 1 < stats["spec_mean_acceptance_length"] <= 1 + SPEC["num_speculative_tokens"]
    assert 0 < stats["spec_acceptance_rate"] <= 1


def test_unverified_tokens_never_reach_the_prefix_cache(engines, llama_dir):
    """A follow-up prompt that extends a speculated output reuses its cached blocks; their KV
    must be that of the verified tokens (rejected drafts wrote into the same blocks)."""
    plain, spec = engines
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    first = spec.generate(PROMPTS[0], params)[0]
    follow = {"prompt_token_ids": first.prompt_token_ids + first.outputs[0].token_ids}
    hits = spec.engine.block_manager.hits
    again = spec.generate(follow, params)[0]
    assert spec.engine.block_manager.hits > hits
    fresh = LLM(str(llama_dir), block_size=8, enable_prefix_caching=False).generate(follow, params)[0]
    assert again.outputs[0].token_ids == fresh.outputs[0].token_ids


def test_seeded_sampling_runs_and_is_reproducible(engines):
    _, spec = engines
    params = SamplingParams(temperature=0.8, seed=3, max_tokens=30, ignore_eos=True)
    assert run(spec, params) == run(spec, params)


def test_rejection_sampling_preserves_the_distribution():
    """Many seeds, one step: the first new token follows p0 and, after an accepted draft, the
    next one follows p1, whatever the (deterministic) draft."""
    torch.manual_seed(0)
    vocab, rows = 6, 20000
    logits = torch.randn(3, vocab) * 1.5
    params = SamplingParams(temperature=0.7, top_k=5)
    seqs = [Sequence(i, "r", [1, 2], params, seed=i * 7919 + 1) for i in range(rows)]
    drafts = [[2, 4]] * rows
    out = Sampler.verify(logits.repeat(rows, 1), seqs, drafts)
    scaled = logits / 0.7
    kth = scaled.topk(5, dim=-1).values[:, -1:]
    target = scaled.masked_fill(scaled < kth, float("-inf")).softmax(-1)
    first = torch.bincount(torch.tensor([t[0] for t in out]), minlength=vocab) / rows
    assert torch.allclose(first, target[0], atol=0.015), (first, target[0])
    after = [t[1] for t in out if t[0] == 2 and len(t) > 1]
    second = torch.bincount(torch.tensor(after), minlength=vocab) / len(after)
    assert len(after) > 1000 and torch.allclose(second, target[1], atol=0.03), (second, target[1])
    assert all(len(t) <= 3 for t in out)


def test_greedy_verify_accepts_the_argmax_prefix():
    logits = torch.full((4, 5), -1.0)
    logits[0, 3] = logits[1, 1] = logits[2, 0] = logits[3, 2] = 1.0   # argmax 3, 1, 0, 2
    seq = Sequence(0, "r", [1], SamplingParams(temperature=0))
    assert Sampler.verify(logits, [seq], [[3, 1, 4]]) == [[3, 1, 0]]
    assert Sampler.verify(logits, [seq], [[3, 1, 0]]) == [[3, 1, 0, 2]]
    assert Sampler.verify(logits[:1], [seq], [[]]) == [[3]]


def test_ngram_proposer_takes_the_latest_longest_match():
    import numpy as np
    prop = NgramProposer(3, 1, 3)
    tokens = np.array([1, 2, 3, 9, 1, 2, 3, 5, 6, 7, 1, 2, 3])
    assert prop.propose(tokens) == [5, 6, 7]
    assert prop.propose(np.array([4, 1, 8, 8, 1])) == [8, 8, 1]
    assert prop.propose(np.array([1, 2, 3])) == []


@pytest.mark.parametrize("config, message", [
    ({"method": "eagle", "num_speculative_tokens": 2}, "method must be one of ngram"),
    ({"method": "ngram"}, "needs num_speculative_tokens"),
    ({"method": "ngram", "num_speculative_tokens": 2, "lookup": 3}, "unknown keys: lookup"),
    ({"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 3,
      "prompt_lookup_max": 2}, "prompt_lookup_min (3) must not exceed"),
])
def test_bad_speculative_config_is_named(llama_dir, config, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LLM(str(llama_dir), speculative_config=config)


def test_cli_option(llama_dir):
    from click.testing import CliRunner

    from litevllm.cli import cli
    spec = '{"method": "ngram", "num_speculative_tokens": 3}'
    base = ["run", "--model", str(llama_dir), "--prompt", "hello", "--temperature", "0",
            "--max-tokens", "12", "--no-chat-template"]
    plain = CliRunner().invoke(cli, base)
    r = CliRunner().invoke(cli, base + ["--speculative-config", spec])
    assert r.exit_code == 0 and r.stdout == plain.stdout, r.output
    for bad, why in (("{nope", "not valid JSON"), ('{"method": "ngram"}', "num_speculative_tokens")):
        r = CliRunner().invoke(cli, base + ["--speculative-config", bad])
        assert r.exit_code != 0 and why in r.output and "Traceback" not in r.output


def test_verify_steps_are_decode_rows(engines, monkeypatch):
    """A verify step is laid out as decode rows, so it replays the decode CUDA graphs: row j of
    a sequence holds its j-th token at position p + j, writes that slot and attends to p + j + 1
    positions through the sequence's own block table."""
    _, spec = engines
    runner, checked = spec.engine.runner, []
    prepare, bs = runner.prepare, runner.block_size

    def spy(batch):
        inputs = prepare(batch)
        if batch.drafts:
            m, pos, row = inputs.meta, inputs.positions.tolist(), 0
            assert m.is_decode and m.num_seqs == len(pos) and m.max_query_len == 1
            assert m.seq_lens.tolist() == [p + 1 for p in pos]
            for i, (seq, first) in enumerate(zip(batch.seqs, inputs.sample_index)):
                draft, start = batch.drafts.get(seq.seq_id, []), seq.num_computed_tokens
                span = range(start, start + 1 + len(draft))
                assert first == row and pos[row:row + len(span)] == list(span)
                assert inputs.input_ids[row:row + len(span)].tolist() == [seq.token_ids[start]] + draft
                assert m.slot_mapping[row:row + len(span)].tolist() == \
                    [seq.block_table[p // bs] * bs + p % bs for p in span]
                width = m.block_tables.shape[1]
                assert all(m.block_tables[r].tolist() == (seq.block_table + [0] * width)[:width]
                           for r in range(row, row + len(span)))
                row += len(span)
            checked.append(len(pos))
        return inputs
    monkeypatch.setattr(runner, "prepare", spy)
    spec.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))
    assert checked and max(checked) > 1


def test_verify_steps_beyond_a_decode_graph_are_one_sequence_each(llama_dir, monkeypatch):
    """A verify step with more rows (1 + drafts per sequence) than ``max_num_seqs`` cannot replay
    a decode graph: it is laid out as a mixed step (one sequence with 1 + d query rows each, so
    prefill-step graphs take it) and gives the plain greedy tokens."""
    common = dict(block_size=8, max_num_seqs=2, seed=0)
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    prompts = [PROMPTS[0], PROMPTS[2]]
    want = [o.outputs[0].token_ids for o in LLM(str(llama_dir), **common).generate(prompts, params)]
    spec = LLM(str(llama_dir), speculative_config=SPEC, **common)
    runner, laid = spec.engine.runner, []
    prepare = runner.prepare

    def spy(batch):  # records only: the engine would contain a failure to the request
        inputs = prepare(batch)
        if batch.drafts:
            drafts = [len(batch.drafts.get(s.seq_id, ())) for s in batch.seqs]
            m = inputs.meta
            laid.append((drafts, len(inputs.input_ids), m.is_decode, m.num_seqs, m.query_lens_cpu))
        return inputs
    monkeypatch.setattr(runner, "prepare", spy)
    got = [o.outputs[0].token_ids for o in spec.generate(prompts, params)]
    assert got == want
    wide = [x for x in laid if len(x[0]) + sum(x[0]) > 2]
    assert wide
    for drafts, rows, is_decode, num_seqs, query_lens in laid:
        assert rows == len(drafts) + sum(drafts)
        if rows > 2:
            assert not is_decode and num_seqs == len(drafts)
            assert query_lens == [1 + d for d in drafts]
