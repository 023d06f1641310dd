"""Structured outputs through xgrammar on a tiny random Llama (CPU): every output obeys its
constraint, with n > 1, prefix caching, multi-step and speculative engines; bad constraints are
ValueErrors naming the problem; a grammar cut off by max_tokens ends with "length"."""
import json
import re

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from litevllm import LLM, SamplingParams, StructuredOutputsParams
from litevllm.plugin_api import StructuredOutputBackend, apply_bitmask
from litevllm.testing import observe_logits, tiny_tokenizer

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}
CONSTRAINTS = {
    "json": (StructuredOutputsParams(json=SCHEMA), None),
    "regex": (StructuredOutputsParams(regex=r"[a-c]{2,4}-\d{3}"), r"[a-c]{2,4}-\d{3}"),
    "choice": (StructuredOutputsParams(choice=["red", "green", "blue"]), r"red|green|blue"),
    "grammar": (StructuredOutputsParams(grammar='root ::= "(" item ("," item)* ")"\n'
                                                'item ::= [0-9] | "x"'),
                r"\([0-9x](,[0-9x])*\)"),
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("xgr-llama")
    tok = tiny_tokenizer(path)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llm(model_dir):
    return LLM(str(model_dir), block_size=8, max_num_seqs=8)


def obeys(kind, text):
    if kind == "json":
        value = json.loads(text, strict=False)  # xgrammar lets control characters into strings
        return set(value) == {"name", "age"} and isinstance(value["age"], int) \
            and isinstance(value["name"], str) and len(value["name"]) <= 6
    return re.fullmatch(CONSTRAINTS[kind][1], text) is not None


def check(outs, kind):
    for out in outs:
        for c in out.outputs:
            assert c.finish_reason == "stop", (kind, c.text, c.finish_reason)
            assert obeys(kind, c.text), (kind, c.text)


@pytest.mark.parametrize("kind", sorted(CONSTRAINTS))
def test_outputs_obey_the_constraint(llm, kind):
    so = CONSTRAINTS[kind][0]
    params = [SamplingParams(temperature=t, seed=s, max_tokens=120, structured_outputs=so)
              for t, s in ((0, None), (1.0, 1), (1.0, 2), (0.7, 3))]
    check(llm.generate(["hello", "the cat", "hello", "a b c"], params), kind)


def test_n_samples_prefix_cache_and_unconstrained_neighbours(llm):
    so = CONSTRAINTS["regex"][0]
    prompt = "hello there, the same long prompt shares its cached blocks"
    params = SamplingParams(n=3, temperature=1.0, seed=5, max_tokens=40, structured_outputs=so)
    free = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    outs = llm.generate([prompt, prompt], [params, free])
    outs += llm.generate(prompt, params)                  # its prompt blocks come from the cache
    check([outs[0], outs[2]], "regex")
    assert len(outs[0].outputs) == 3 and outs[2].num_cached_tokens > 0
    assert len(outs[1].outputs[0].token_ids) == 10
    plain = LLM(llm.engine.config.model, block_size=8).generate(prompt, free)[0]
    assert outs[1].outputs[0].token_ids == plain.outputs[0].token_ids


@pytest.mark.parametrize("engine_kw", [
    {"num_scheduler_steps": 4},
    {"speculative_config": {"method": "ngram", "num_speculative_tokens": 3,
                            "min_acceptance_rate": 0.01}},
    {"async_scheduling": True},
], ids=["multi-step", "speculative", "async-scheduling"])
def test_with_multi_step_speculative_and_async_engines(model_dir, llm, engine_kw):
    other = LLM(str(model_dir), block_size=8, max_num_seqs=8, **engine_kw)
    so = CONSTRAINTS["json"][0]
    params = [SamplingParams(temperature=0, max_tokens=120, structured_outputs=so),
              SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)]
    prompts = ["hello " * 5, "the cat " * 6]
    outs = other.generate(prompts, params)
    check(outs[:1], "json")
    ref = llm.generate(prompts, params)
    assert [o.outputs[0].token_ids for o in outs] == [o.outputs[0].token_ids for o in ref]


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("kind", sorted(CONSTRAINTS))
def test_multi_step_fills_masks_per_step(model_dir, llm, kind, async_scheduling):
    """Constrained rows run several steps per host sync, each step masked by the grammar as
    advanced by the tokens before it: same tokens as single steps, greedy and seeded."""
    other = LLM(str(model_dir), block_size=8, max_num_seqs=8, num_scheduler_steps=8,
                async_scheduling=async_scheduling)
    so = CONSTRAINTS[kind][0]
    params = [SamplingParams(temperature=t, seed=s, max_tokens=120, structured_outputs=so)
              for t, s in ((0, None), (1.0, 1), (0.7, 3))]
    prompts = ["hello", "the cat", "a b c"]
    engine, finished, passes = other.engine, {}, []
    with observe_logits(other) as seen:
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            engine.add_request(str(i), prompt, p)
        while engine.has_unfinished_requests():
            before = len(seen.steps)
            finished.update((o.request_id, o) for o in engine.step() if o.finished)
            passes.append(len(seen.steps) - before)  # forward passes in this engine step
    outs = [finished[str(i)] for i in range(len(prompts))]
    check(outs, kind)
    assert max(passes) > 1
    ref = llm.generate(prompts, params)
    assert [o.outputs[0].token_ids for o in outs] == [o.outputs[0].token_ids for o in ref]


def test_async_scheduling_same_outputs_for_every_kind(model_dir, llm):
    asyn = LLM(str(model_dir), block_size=8, max_num_seqs=8, async_scheduling=True)
    kinds = sorted(CONSTRAINTS)
    params = [SamplingParams(n=1 + i % 2, temperature=0.3 * i, seed=i, max_tokens=80,
                             structured_outputs=CONSTRAINTS[k][0]) for i, k in enumerate(kinds)]
    params.append(SamplingParams(temperature=0.5, seed=9, max_tokens=20, ignore_eos=True))
    prompts = ["hello " * (1 + i) for i in range(len(params))]
    outs = asyn.generate(prompts, params)
    for kind, out in zip(kinds, outs):
        check([out], kind)
    ref = llm.generate(prompts, params)
    assert [[c.token_ids for c in o.outputs] for o in outs] == \
        [[c.token_ids for c in o.outputs] for o in ref]


def test_length_when_the_grammar_cannot_finish(llm):
    so = StructuredOutputsParams(regex=r"a{50}")
    out = llm.generate("hello", SamplingParams(temperature=0, max_tokens=7, structured_outputs=so))[0]
    c = out.outputs[0]
    assert c.finish_reason == "length" and len(c.token_ids) == 7 and set(c.text) <= {"a"}


@pytest.mark.parametrize("so, message", [
    (dict(json={"type": "object", "properties": {"a": {"type": "nope"}}}), "invalid JSON schema"),
    (dict(json="{not json"), "json is not valid JSON"),
    (dict(regex="(ab"), "invalid regex"),
    (dict(grammar="root ::= missing_rule"), "invalid EBNF grammar"),
])
def test_bad_constraints_are_value_errors(llm, so, message):
    with pytest.raises(ValueError, match=message):
        llm.engine.add_request("bad", "hi", SamplingParams(
            structured_outputs=StructuredOutputsParams(**so)))
    assert not llm.engine.has_unfinished_requests()


@pytest.mark.parametrize("kw, message", [
    ({}, "exactly one of json, regex, choice, grammar; got none"),
    ({"regex": "a", "choice": ["a"]}, "got regex, choice"),
    ({"choice": []}, "choice must be a non-empty list"),
])
def test_params_name_the_problem(kw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        StructuredOutputsParams(**kw)
    with pytest.raises(ValueError, match="structured_outputs must be a StructuredOutputsParams"):
        SamplingParams(structured_outputs={"json": {}})


def test_compiled_grammars_are_cached(llm):
    so = StructuredOutputsParams(choice=["up", "down"])
    llm.generate(["a", "b"], SamplingParams(temperature=0, max_tokens=8, structured_outputs=so))
    manager = llm.engine.structured
    assert isinstance(manager.backend, StructuredOutputBackend)
    before = len(manager.compiled)
    llm.generate("c", SamplingParams(temperature=0, max_tokens=8, structured_outputs=so))
    assert len(manager.compiled) == before and not manager.matchers


def test_apply_bitmask():
    logits = torch.zeros(2, 40)
    bitmask = torch.zeros(2, 2, dtype=torch.int32)
    bitmask[0, 0] = 0b101                             # tokens 0 and 2
    bitmask[1, 0] = bitmask[1, 1] = -2**31            # bit 31: tokens 31 and 63 (past the vocab)
    out = apply_bitmask(logits, bitmask)
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [0, 2]
    assert torch.isfinite(out[1]).nonzero().flatten().tolist() == [31]


def test_compiling_does_not_hold_up_other_requests(llm, monkeypatch):
    import threading
    engine = llm.engine
    backend = engine.structured.backend
    release, compile_ = threading.Event(), backend.compile

    def slow(params):
        release.wait(10)
        if params.regex == "q+":
            raise RuntimeError("compiler crashed")
        return compile_(params)
    monkeypatch.setattr(backend, "compile", slow)
    slow_params = SamplingParams(temperature=0, max_tokens=5,
                                 structured_outputs=StructuredOutputsParams(regex="[pq]{3}"))
    broken = SamplingParams(structured_outputs=StructuredOutputsParams(regex="q+"))
    engine.add_request("slow", "hi", slow_params)
    engine.add_request("broken", "hi", broken)
    engine.add_request("free", "hi", SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    finals = {}
    for _ in range(3):  # the free request runs while both grammars compile
        finals.update((o.request_id, o) for o in engine.step() if o.finished)
    assert set(finals) == {"free"}
    release.set()
    while engine.has_unfinished_requests():
        finals.update((o.request_id, o) for o in engine.step() if o.finished)
    assert re.fullmatch("[pq]{3}", finals["slow"].outputs[0].text)
    assert finals["broken"].outputs[0].finish_reason == "error"
    assert "compiler crashed" in finals["broken"].error


@pytest.mark.parametrize("spoil", [0, 3])
def test_speculative_drafts_for_constrained_rows(model_dir, llm, spoil):
    """Drafts (an oracle: the plain constrained output, every ``spoil``-th token changed) are cut
    where the grammar rejects them and verified under per-position masks: same output."""
    spec = LLM(str(model_dir), block_size=8, max_num_seqs=8, speculative_config={
        "method": "ngram", "num_speculative_tokens": 4, "min_acceptance_rate": 0.01})
    params = SamplingParams(temperature=0, max_tokens=80,
                            structured_outputs=CONSTRAINTS["json"][0])
    ref = llm.generate("the cat", params)[0]
    oracle = ref.prompt_token_ids + ref.outputs[0].token_ids

    def propose(tokens, k):
        draft = oracle[len(tokens):len(tokens) + k]
        return [t + 1 if spoil and (len(tokens) + i) % spoil == 0 else t
                for i, t in enumerate(draft)]
    spec.engine.spec.proposer.propose = propose
    out = spec.generate("the cat", params)[0]
    assert out.outputs[0].token_ids == ref.outputs[0].token_ids
    check([out], "json")
    stats = spec.engine.stats()
    assert stats["spec_num_accepted_tokens"] > 0
    if spoil:
        assert stats["spec_num_accepted_tokens"] < len(ref.outputs[0].token_ids) - 1


def test_batched_bitmask_fill_matches_one_by_one(model_dir):
    """Many rows are filled by xgrammar's thread pool: the same bits as one matcher at a time."""
    from transformers import AutoTokenizer

    from litevllm_xgrammar.backend import XGrammarBackend
    tok = AutoTokenizer.from_pretrained(model_dir)
    backend = XGrammarBackend(tok, len(tok), [tok.eos_token_id])
    compiled = backend.compile(CONSTRAINTS["json"][0])
    matchers = [backend.matcher(compiled) for _ in range(12)]
    one = backend.allocate_bitmask(len(matchers))
    for i, m in enumerate(matchers):  # matcher i is i tokens into the grammar
        for _ in range(i):
            m.fill_bitmask(one, i)
            allowed = [t for t in range(len(tok)) if one[i, t // 32] >> (t % 32) & 1]
            assert m.accept_token(allowed[len(allowed) // 2])
    rows = list(range(len(matchers)))
    for r, m in zip(rows, matchers):
        m.fill_bitmask(one, r)
    batched = backend.allocate_bitmask(len(matchers))
    backend.fill_bitmasks(matchers, batched, rows)
    assert torch.equal(one, batched) and len(set(map(tuple, one.tolist()))) > 1
