"""Incremental detokenization, stop strings and streaming with a real byte-level BPE tokenizer.

A scripted model (logits that make a chosen token sequence the greedy choice) makes the text
exact, so stop strings can be placed across token boundaries and multi-byte characters."""
from collections import defaultdict

import pytest
import torch

from litevllm import LLM, SamplingParams
from litevllm.engine.detokenizer import Detokenizer, DetokState, find_stop, stream_delta

TEXT = "Héllo wörld! 日本語 🙂 The end."
PROMPT = {"prompt_token_ids": [5, 6, 7]}


@pytest.fixture(scope="module")
def script(tokenizer):
    ids = tokenizer.encode(TEXT)
    assert tokenizer.decode(ids) == TEXT
    # the tokenizer really splits some multi-byte character across tokens
    assert any("\ufffd" in tokenizer.decode([t]) for t in ids)
    return ids


@pytest.fixture(scope="module")
def scripted_llm(llama_dir, script):
    llm = LLM(str(llama_dir), block_size=8)
    vocab = llm.engine.hf_config.vocab_size

    def scripted(inputs, logits):
        positions = inputs.positions[inputs.logit_rows].tolist()
        logits = torch.zeros(len(positions), vocab)
        for row, pos in enumerate(positions):
            step = pos + 1 - len(PROMPT["prompt_token_ids"])
            if 0 <= step < len(script):
                logits[row, script[step]] = 10.0
        return logits
    llm.engine.add_logits_observer(scripted)
    return llm


def run(llm, stream=False, **kw):
    params = SamplingParams(temperature=0, max_tokens=kw.pop("max_tokens", 40), **kw)
    if not stream:
        return llm.generate(PROMPT, params)[0].outputs[0]
    pieces, final = [], None
    for out in llm.generate(PROMPT, params, stream=True):
        pieces.append(out.outputs[0].delta_text)
        final = out
    return final.outputs[0], pieces


def test_detokenizer_streams_whole_characters(tokenizer, script):
    detok, state = Detokenizer(tokenizer), DetokState(0)
    pieces = [detok.step(state, script[:i + 1]) for i in range(len(script))]
    assert "".join(pieces) == TEXT == state.text
    assert not any("\ufffd" in p for p in pieces)
    assert "" in pieces  # some token ended mid-character and was held back


def test_full_text_matches_decode(scripted_llm, tokenizer, script):
    c = run(scripted_llm, max_tokens=len(script))
    assert c.token_ids == script and c.text == TEXT and c.finish_reason == "length"


def test_text_ending_mid_character_is_flushed(scripted_llm, tokenizer, script):
    cut = next(i for i in range(1, len(script)) if tokenizer.decode(script[:i]).endswith("\ufffd"))
    c = run(scripted_llm, max_tokens=cut)
    assert c.text == tokenizer.decode(script[:cut])


@pytest.mark.parametrize("stop", ["wörld! 日", "日本", "本語 🙂", "🙂 T", "e end"])
def test_stop_string_across_tokens_is_trimmed(scripted_llm, tokenizer, script, stop):
    c = run(scripted_llm, stop=[stop])
    assert c.finish_reason == "stop" and c.stop_reason == stop
    assert c.text == TEXT[:TEXT.index(stop)]
    # generation stopped at the token completing the stop string
    assert TEXT.index(stop) + len(stop) <= len(tokenizer.decode(c.token_ids))
    assert stop not in tokenizer.decode(c.token_ids[:-1])
    c = run(scripted_llm, stop=[stop], include_stop_str_in_output=True)
    assert c.text == TEXT[:TEXT.index(stop) + len(stop)]


def test_earliest_stop_string_wins(scripted_llm):
    c = run(scripted_llm, stop=["The", "wörld", "ö"])
    assert c.stop_reason == "ö" and c.text == "Héllo w"


def test_stop_strings_ignored_before_min_tokens(scripted_llm, script):
    c = run(scripted_llm, stop=["H"], min_tokens=3)
    assert c.finish_reason == "length" and c.text == TEXT


@pytest.mark.parametrize("stop", [None, ["日本"], ["🙂 T", "xyz!"], ["end."]])
def test_stream_deltas_concatenate_to_final_text(scripted_llm, stop):
    final, pieces = run(scripted_llm, stream=True, stop=stop)
    assert "".join(pieces) == final.text == run(scripted_llm, stop=stop).text
    assert not any("\ufffd" in p for p in pieces)
    assert sum(1 for p in pieces if p) > 3  # text really arrived in several pieces


def test_find_stop_and_hold_back():
    assert find_stop("abc STOP", 2, ["STOP"]) == (4, "STOP")
    assert find_stop("STOP abc", 2, ["STOP"]) is None  # only matches touching the new text
    state = DetokState(0)
    state.text = "hello wo"
    assert stream_delta(state, ["world"], finished=False) == "hell"  # "o wo" might start "world"
    state.text = "hello world!"
    assert stream_delta(state, ["world"], finished=True) == "o world!"


def test_streaming_real_model_matches_decode(llm, tokenizer):
    prompts = ["Hello world", "Café crème", "日本語"]
    params = SamplingParams(temperature=0.8, seed=5, max_tokens=24, ignore_eos=True, n=2)
    text, finals = defaultdict(str), {}
    for out in llm.generate(prompts, params, stream=True):
        for c in out.outputs:
            text[out.request_id, c.index] += c.delta_text
        if out.finished:
            finals[out.request_id] = out
    assert len(finals) == 3
    for rid, out in finals.items():
        assert out.prompt_token_ids == tokenizer.encode(out.prompt)
        for c in out.outputs:
            assert text[rid, c.index] == c.text == tokenizer.decode(c.token_ids,
                                                                   skip_special_tokens=True)


def test_rust_decode_gives_the_tokenizers_text(tokenizer, tmp_path):
    """The detokenizer decodes through the fast tokenizer's Rust decode: the same text as
    ``tokenizer.decode`` (special tokens, split multi-byte characters); not for a subclass
    with its own decode."""
    import random

    from litevllm.engine.detokenizer import rust_decode
    fast = rust_decode(tokenizer)
    assert fast is not None and Detokenizer(tokenizer).fast is not None
    rng = random.Random(0)
    ids = tokenizer.encode(TEXT) + list(tokenizer.all_special_ids)
    for _ in range(200):
        sample = [rng.choice(ids) if rng.random() < 0.7 else rng.randrange(len(tokenizer))
                  for _ in range(rng.randint(0, 12))]
        for skip in (False, True):
            assert fast(sample, skip_special_tokens=skip) == tokenizer.decode(
                sample, skip_special_tokens=skip, clean_up_tokenization_spaces=False)

    class Own(type(tokenizer)):
        def _decode(self, token_ids, **kwargs):
            return "x"
    tokenizer.save_pretrained(tmp_path)
    own = Own.from_pretrained(tmp_path)
    assert rust_decode(own) is None and Detokenizer(own).fast is None
    assert Detokenizer(own)._decode([5, 6], True) == "x"  # its own decode is used
