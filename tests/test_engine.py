"""Serving-engine behaviour on a tiny Llama: prefix caching, chunked prefill, preemption,
n > 1 forking, abort, metrics, chat."""
import random

import pytest

from litevllm import LLM, SamplingParams

BS = 8  # block size used throughout


def rand_ids(n, seed):
    rng = random.Random(seed)
    return [rng.randrange(3, 300) for _ in range(n)]


def greedy(max_tokens=8, **kw):
    return SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, **kw)


def tokens(outs):
    return [[c.token_ids for c in o.outputs] for o in outs]


def make(path, **kw):
    return LLM(str(path), block_size=BS, **kw)


def record_batches(llm):
    """Wrap the scheduler so every scheduled batch's (num_tokens, seqs, n) is recorded."""
    seen, schedule = [], llm.engine.scheduler.schedule

    def wrapped(*args, **kwargs):
        batch = schedule(*args, **kwargs)
        seen.append((batch.num_tokens, len(batch.seqs), list(batch.num_new_tokens)))
        return batch
    llm.engine.scheduler.schedule = wrapped
    return seen


# prefix caching --------------------------------------------------------------------------------
SHARED = rand_ids(40, 1)  # 5 full blocks
FIRST = SHARED + rand_ids(13, 2)           # 53 tokens
OTHERS = [SHARED + rand_ids(5, 3),          # 45 tokens: 5 cached blocks
          SHARED[:20] + rand_ids(30, 4),    # 50 tokens: 2 cached blocks (16 tokens)
          rand_ids(16, 5) + SHARED,         # no shared prefix
          FIRST,                            # the same prompt: all full blocks but the last token's
          FIRST[:48]]                       # 48 tokens: the last block holds the final token, so 5


def run_prefix_workload(llm):
    first = llm.generate({"prompt_token_ids": FIRST}, greedy())
    rest = llm.generate([{"prompt_token_ids": p} for p in OTHERS], greedy())
    return first + rest


def test_prefix_caching_same_output_and_expected_hits(llama_dir):
    on, off = make(llama_dir), make(llama_dir, enable_prefix_caching=False)
    outs_on, outs_off = run_prefix_workload(on), run_prefix_workload(off)
    assert tokens(outs_on) == tokens(outs_off)

    expected = [0, 40, 16, 0, 48, 40]
    assert [o.num_cached_tokens for o in outs_on] == expected
    assert [o.metrics.num_cached_tokens for o in outs_on] == expected
    for o, hits in zip(outs_on, expected):
        assert o.cache_hit_rate == pytest.approx(hits / len(o.prompt_token_ids))
    stats = on.engine.stats()
    prompts = [FIRST] + OTHERS
    assert stats["prefix_cache_hits"] == sum(expected)
    assert stats["prefix_cache_queries"] == sum(map(len, prompts))
    assert stats["prefix_cache_hit_rate"] == pytest.approx(sum(expected) / sum(map(len, prompts)))
    assert [o.num_cached_tokens for o in outs_off] == [0] * 6
    assert off.engine.stats()["prefix_cache_hits"] == 0


def test_cached_blocks_are_shared_not_copied(llama_dir):
    llm = make(llama_dir)
    eng = llm.engine
    llm.generate({"prompt_token_ids": FIRST}, greedy(2))
    eng.add_request("a", {"prompt_token_ids": OTHERS[0]}, greedy(4))
    eng.add_request("b", {"prompt_token_ids": OTHERS[0]}, greedy(4))
    eng.step()
    a, b = (eng.requests[r].seqs[0] for r in "ab")
    assert a.block_table[:5] == b.block_table[:5]
    assert all(eng.block_manager.ref_count[blk] == 2 for blk in a.block_table[:5])
    assert a.block_table[5] != b.block_table[5]
    while eng.has_unfinished_requests():
        eng.step()
    assert sum(eng.block_manager.ref_count) == 0


# chunked prefill ------------------------------------------------------------------------------
CHUNK_PROMPTS = [rand_ids(n, 10 + n) for n in (50, 3, 37, 9, 70, 1)]


@pytest.mark.parametrize("budget", [16, 64])
def test_chunked_prefill_same_output(llama_dir, budget):
    prompts = [{"prompt_token_ids": p} for p in CHUNK_PROMPTS]
    ref = tokens(make(llama_dir, max_num_batched_tokens=100_000).generate(prompts, greedy(10)))
    llm = make(llama_dir, max_num_batched_tokens=budget)
    batches = record_batches(llm)
    assert tokens(llm.generate(prompts, greedy(10))) == ref
    assert max(b[0] for b in batches) <= budget
    # some steps mixed decodes (1 token) with prefill chunks
    assert any(1 in ns and max(ns) > 1 for _, _, ns in batches)


def test_chunked_prefill_prompt_logprobs(llama_dir):
    prompt = {"prompt_token_ids": CHUNK_PROMPTS[4]}
    params = greedy(3, prompt_logprobs=2)
    whole = make(llama_dir).generate(prompt, params)[0].prompt_logprobs
    chunked = make(llama_dir, max_num_batched_tokens=16).generate(prompt, params)[0].prompt_logprobs
    assert len(whole) == len(chunked) == 70
    for a, b in zip(whole[1:], chunked[1:]):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a)


def test_prompt_logprobs_complete_despite_prefix_cache(llama_dir):
    llm = make(llama_dir)
    params = greedy(2, prompt_logprobs=0)
    first = llm.generate({"prompt_token_ids": FIRST}, params)[0]
    again = llm.generate({"prompt_token_ids": FIRST}, params)[0]
    assert len(again.prompt_logprobs) == len(FIRST)
    for a, b in zip(first.prompt_logprobs[1:], again.prompt_logprobs[1:]):
        assert a.keys() == b.keys() and abs(a[next(iter(a))] - b[next(iter(b))]) < 1e-4


# preemption -----------------------------------------------------------------------------------
PRE_PROMPTS = [rand_ids(n, 20 + n) for n in (20, 14, 25, 9)]


def stream_finals(llm, prompts, params):
    """Run through the streaming API; returns {request_id: final output}, asserting each
    request finished exactly once and nothing came after its final output."""
    finals = {}
    for out in llm.generate(prompts, params, stream=True):
        assert out.request_id not in finals, "output after the final one"
        if out.finished:
            finals[out.request_id] = out
    assert len(finals) == len(prompts)
    return [finals[k] for k in sorted(finals, key=int)]


@pytest.mark.parametrize("chunk", [100_000, 16])
def test_preemption_same_greedy_output(llama_dir, chunk):
    prompts = [{"prompt_token_ids": p} for p in PRE_PROMPTS]
    ref = make(llama_dir).generate(prompts, greedy(30, prompt_logprobs=1))
    llm = make(llama_dir, num_gpu_blocks_override=10, max_num_batched_tokens=chunk)
    outs = stream_finals(llm, prompts, greedy(30, prompt_logprobs=1))
    assert tokens(outs) == tokens(ref)
    for o, r in zip(outs, ref):  # prompt logprobs recorded once, despite recomputation
        assert len(o.prompt_logprobs) == len(r.prompt_logprobs) == len(r.prompt_token_ids)
        for a, b in zip(o.prompt_logprobs[1:], r.prompt_logprobs[1:]):
            assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a)
    assert sum(o.metrics.num_preemptions for o in outs) > 0
    assert sum(llm.engine.block_manager.ref_count) == 0
    assert llm.engine.block_manager.num_free_blocks == 10


def test_preemption_of_forked_samples(llama_dir):
    """n > 1 seeded samples give the same tokens when their children are preempted and
    recomputed as with a roomy cache."""
    prompts = [{"prompt_token_ids": p} for p in PRE_PROMPTS[:2]]
    params = SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=25, ignore_eos=True)
    ref = tokens(make(llama_dir).generate(prompts, params))
    llm = make(llama_dir, num_gpu_blocks_override=9)
    preempted, preempt = [], llm.engine.scheduler._preempt
    llm.engine.scheduler._preempt = lambda seq, batch: (preempted.append(seq.index),
                                                        preempt(seq, batch))
    outs = stream_finals(llm, prompts, params)
    assert tokens(outs) == ref
    assert all(len(o.outputs) == 3 and [c.index for c in o.outputs] == [0, 1, 2] for o in outs)
    assert len({tuple(c) for c in ref[0]}) > 1  # the samples really differ
    assert any(i > 0 for i in preempted)       # forked children were preempted
    assert sum(llm.engine.block_manager.ref_count) == 0


def test_fork_reserves_blocks_and_seq_budget(llama_dir):
    """Forking copies each sample's partial last block: the scheduler keeps those blocks free,
    and counts the samples against max_num_seqs."""
    prompts = [{"prompt_token_ids": rand_ids(12, i)} for i in range(3)]
    params = SamplingParams(n=2, temperature=0.8, seed=3, max_tokens=6, ignore_eos=True)
    ref = tokens(make(llama_dir).generate(prompts, params))
    llm = make(llama_dir, num_gpu_blocks_override=5, max_num_seqs=3)
    running, step = [], llm.engine.step
    llm.engine.step = lambda: (step(), running.append(len(llm.engine.scheduler.running)))[0]
    assert tokens(stream_finals(llm, prompts, params)) == ref
    assert max(running) <= 3


def test_prompt_that_never_fits_fails_at_admission(llama_dir):
    llm = make(llama_dir, num_gpu_blocks_override=4)  # 32 tokens of cache
    big, ok = llm.generate([{"prompt_token_ids": rand_ids(40, 1)}, {"prompt_token_ids": [5, 6]}],
                           greedy(3), return_errors=True)
    assert big.finished and big.outputs[0].finish_reason == "error"
    assert "KV-cache blocks" in big.error
    assert ok.outputs[0].finish_reason == "length" and len(ok.outputs[0].token_ids) == 3


def test_sequence_longer_than_cache_stops_with_length(llama_dir):
    llm = make(llama_dir, num_gpu_blocks_override=4)
    out = llm.generate({"prompt_token_ids": [5, 6, 7]}, greedy(100))[0]
    assert out.outputs[0].finish_reason == "length"
    assert len(out.prompt_token_ids) + len(out.outputs[0].token_ids) == 4 * BS


# n > 1 ----------------------------------------------------------------------------------------
def test_n_samples_share_prefix_blocks(llama_dir):
    eng = make(llama_dir).engine
    eng.add_request("r", {"prompt_token_ids": rand_ids(20, 3)},
                    SamplingParams(n=3, temperature=1.0, seed=1, max_tokens=6, ignore_eos=True))
    eng.step()  # prefill, fork, first token of each sample
    seqs = eng.requests["r"].seqs
    assert [s.index for s in seqs] == [0, 1, 2]
    tables = [s.block_table for s in seqs]
    assert tables[0][:2] == tables[1][:2] == tables[2][:2]          # full blocks shared
    assert all(eng.block_manager.ref_count[b] == 3 for b in tables[0][:2])
    assert len({t[2] for t in tables}) == 3                        # partial block copied
    assert all(eng.block_manager.ref_count[t[2]] == 1 for t in tables)
    assert sorted(eng.block_manager.pending_copies) == [(tables[0][2], tables[1][2]),
                                                        (tables[0][2], tables[2][2])]
    outs = []
    while eng.has_unfinished_requests():
        outs += eng.step()
    final = [o for o in outs if o.finished]
    assert len(final) == 1 and len(final[0].outputs) == 3
    assert all(len(c.token_ids) == 6 and c.finish_reason == "length" for c in final[0].outputs)
    assert sum(eng.block_manager.ref_count) == 0


def test_n_greedy_samples_identical(llama_dir):
    out = make(llama_dir).generate({"prompt_token_ids": [4, 5, 6]}, greedy(5, n=2))[0]
    single = make(llama_dir).generate({"prompt_token_ids": [4, 5, 6]}, greedy(5))[0]
    assert out.outputs[0].token_ids == out.outputs[1].token_ids == single.outputs[0].token_ids


# abort and metrics ----------------------------------------------------------------------------
def test_abort_frees_blocks_at_once(llama_dir):
    eng = make(llama_dir).engine
    eng.add_request("a", {"prompt_token_ids": rand_ids(30, 1)}, greedy(50))
    eng.add_request("b", {"prompt_token_ids": rand_ids(12, 2)}, greedy(5))
    eng.step()
    eng.step()
    used_by_a = len(eng.requests["a"].seqs[0].block_table)
    free_before = eng.block_manager.num_free_blocks
    out = eng.abort_request("a")
    assert out.finished and out.outputs[0].finish_reason == "abort"
    assert eng.block_manager.num_free_blocks == free_before + used_by_a
    assert "a" not in eng.requests and len(eng.scheduler.running) == 1
    outs = []
    while eng.has_unfinished_requests():
        outs += eng.step()
    assert [o.request_id for o in outs if o.finished] == ["b"]
    assert eng.block_manager.num_free_blocks == eng.num_blocks


def test_request_metrics(llama_dir):
    llm = make(llama_dir)
    llm.generate({"prompt_token_ids": FIRST}, greedy(2))
    out = llm.generate({"prompt_token_ids": OTHERS[0]}, greedy(6))[0]
    m = out.metrics
    assert m.arrival_time <= m.first_scheduled_time <= m.first_token_time <= m.finished_time
    assert (m.num_prompt_tokens, m.num_cached_tokens, m.num_output_tokens) == (45, 40, 6)
    assert m.num_preemptions == 0


# chat -----------------------------------------------------------------------------------------
def test_chat_uses_template(llm, tokenizer):
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]
    out = llm.chat(conv, greedy(4))[0]
    want = tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    assert want.endswith("<|assistant|>")
    assert out.prompt_token_ids == tokenizer.encode(want)
    other = [{"role": "user", "content": "Café?"}]
    both = llm.chat([conv, other], greedy(4))
    assert len(both) == 2 and tokens(both)[0] == tokens([out])[0]
    assert tokenizer.decode(both[1].prompt_token_ids) == "<|user|>Café?\n<|assistant|>"


def test_chat_without_template(notemplate_dir):
    llm = make(notemplate_dir)
    conv = [{"role": "user", "content": "hi"}]
    with pytest.raises(ValueError, match="chat template"):
        llm.chat(conv, greedy(2))
    out = llm.chat(conv, greedy(2), chat_template="{% for m in messages %}[{{ m['content'] }}]"
                                                  "{% endfor %}")[0]
    assert llm.tokenizer.decode(out.prompt_token_ids) == "[hi]"
    assert len(out.outputs[0].token_ids) == 2


def test_max_model_len_beyond_trained_context_warns(llama_dir, caplog):
    from litevllm import LLM
    limit = LLM(str(llama_dir)).engine.max_model_len
    with caplog.at_level("WARNING", logger="litevllm"):
        llm = LLM(str(llama_dir), max_model_len=limit * 2)
    assert llm.engine.max_model_len == limit * 2
    assert f"beyond the model's max_position_embeddings={limit}" in caplog.text
