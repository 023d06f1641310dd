"""Sampling: seeded reproducibility, top-k / top-p / min-p, temperature, penalties, stop
conditions (stop_token_ids, EOS, ignore_eos, min_tokens, max_tokens), logprobs."""
import json
import shutil
from collections import Counter

import pytest
import torch

from litevllm import LLM, SamplingParams
from litevllm.engine.sampler import Sampler, apply_penalties
from litevllm.engine.sequence import Sequence

N = 4000  # rows sampled at once in the statistical tests


def seqs_for(params, rows, prompt=(1,), outputs=()):
    out = []
    for i in range(rows):
        s = Sequence(i, str(i), list(prompt), params, seed=1000 + i)
        for t in outputs:
            s.append_token(t)
        out.append(s)
    return out


def sample_many(probs, **params):
    """Sample N times (N rows, N seeds) from one distribution; returns token frequencies."""
    logits = torch.tensor(probs).log().expand(N, -1).contiguous()
    result = Sampler([])(logits, seqs_for(SamplingParams(**params), N))
    counts = Counter(result.token_ids)
    return {t: c / N for t, c in counts.items()}


PROBS = [0.4, 0.3, 0.2, 0.1]


@pytest.mark.parametrize("params, allowed", [
    (dict(top_k=2), {0: 0.4 / 0.7, 1: 0.3 / 0.7}),
    (dict(top_p=0.6), {0: 0.4 / 0.7, 1: 0.3 / 0.7}),         # 0.4 < 0.6, 0.4 + 0.3 >= 0.6
    (dict(top_p=0.75), {0: 0.4 / 0.9, 1: 0.3 / 0.9, 2: 0.2 / 0.9}),
    (dict(min_p=0.4), {0: 0.4 / 0.9, 1: 0.3 / 0.9, 2: 0.2 / 0.9}),  # 0.1 < 0.4 * 0.4
    (dict(top_k=2, top_p=0.5), {0: 1.0}),  # top-p over the renormalized top 2: 4/7 > 0.5
    (dict(), dict(enumerate(PROBS))),
    (dict(temperature=0.5), {i: p * p / 0.3 for i, p in enumerate(PROBS)}),  # p^(1/T), T=0.5
])
def test_filters_keep_only_allowed_tokens(params, allowed):
    freq = sample_many(PROBS, **params)
    assert set(freq) == set(allowed)        # nothing outside, everything inside shows up
    for tok, p in allowed.items():
        assert abs(freq[tok] - p) < 0.03, (tok, freq[tok], p)


def test_top_p_on_a_wide_vocab():
    torch.manual_seed(0)
    logits = torch.randn(64) * 3
    probs = logits.softmax(-1)
    order = probs.argsort(descending=True)
    before = probs[order].cumsum(0) - probs[order]
    nucleus = set(order[before <= 0.8].tolist())
    freq = sample_many(probs.tolist(), top_p=0.8)
    assert set(freq) <= nucleus and len(freq) >= len(nucleus) - 2


def test_greedy_rows_ignore_noise_and_filters():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
    seqs = seqs_for(SamplingParams(temperature=0), 1) + seqs_for(SamplingParams(top_k=1), 1)
    assert Sampler([])(logits, seqs).token_ids == [1, 0]


def test_seeded_rows_do_not_depend_on_the_batch():
    torch.manual_seed(1)
    logits = torch.randn(6, 50)
    params = SamplingParams(temperature=1.0, seed=3)
    seqs = seqs_for(params, 6)
    alone = [Sampler([])(logits[i:i + 1], [s]).token_ids[0] for i, s in enumerate(seqs)]
    together = Sampler([])(logits, seqs).token_ids
    mixed = Sampler([])(torch.cat([logits[:1] * 0, logits[3:4]]),
                        seqs_for(SamplingParams(temperature=0), 1) + [seqs[3]]).token_ids
    assert together == alone and mixed[1] == alone[3]


def test_seeded_generation_reproducible_across_batch_mixes(llm):
    seeded = SamplingParams(temperature=1.0, seed=42, max_tokens=12, ignore_eos=True)
    p = {"prompt_token_ids": [10, 20, 30, 40, 50]}
    alone = llm.generate(p, seeded)[0].outputs[0].token_ids
    others = [{"prompt_token_ids": list(range(5, 5 + k))} for k in (3, 17, 30)]
    mixes = [
        [others[0], p, others[1]],
        [others[2], others[1], p],
    ]
    params = [SamplingParams(temperature=0.7, max_tokens=5),
              SamplingParams(temperature=0, max_tokens=20, ignore_eos=True),
              SamplingParams(temperature=1.2, top_k=5, seed=1, max_tokens=9)]
    for mix in mixes:
        ps = [seeded if q is p else params[i % 3] for i, q in enumerate(mix)]
        outs = llm.generate(mix, ps)
        assert outs[mix.index(p)].outputs[0].token_ids == alone
    unseeded = [llm.generate(p, SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True))[0]
                .outputs[0].token_ids for _ in range(3)]
    assert len({tuple(u) for u in unseeded}) > 1  # without a seed, runs differ


def test_penalties_change_logits_as_defined():
    v = 6
    logits = torch.tensor([[2.0, -1.0, 0.5, -2.0, 1.0, 0.0]])
    # prompt has tokens 0, 3; outputs have 1 (twice) and 2 (once)
    def penalized(**kw):
        s = seqs_for(SamplingParams(**kw), 1, prompt=[0, 3], outputs=[1, 2, 1])
        return apply_penalties(logits.clone(), s)[0]

    rep = penalized(repetition_penalty=2.0)
    want = torch.tensor([2.0 / 2, -1.0 * 2, 0.5 / 2, -2.0 * 2, 1.0, 0.0])  # seen: 0,1,2,3
    torch.testing.assert_close(rep, want)
    pres = penalized(presence_penalty=0.5)
    torch.testing.assert_close(pres, logits[0] - 0.5 * torch.tensor([0, 1, 1, 0, 0, 0.]))
    freq = penalized(frequency_penalty=0.5)
    torch.testing.assert_close(freq, logits[0] - 0.5 * torch.tensor([0, 2, 1, 0, 0, 0.]))
    none = penalized()
    torch.testing.assert_close(none, logits[0])
    assert v == logits.shape[1]


def test_penalties_reach_the_sampled_token():
    logits = torch.tensor([[0.0, 5.0, 4.0]])
    seq = seqs_for(SamplingParams(temperature=0, presence_penalty=2.0), 1, outputs=[1])
    assert Sampler([])(logits, seq).token_ids == [2]
    seq = seqs_for(SamplingParams(temperature=0, presence_penalty=2.0), 1, prompt=[1])
    assert Sampler([])(logits, seq).token_ids == [1]   # presence counts outputs only


def test_penalties_are_batched_per_row():
    logits = torch.tensor([[0.0, 5.0, 4.0]] * 2)
    seqs = (seqs_for(SamplingParams(temperature=0, frequency_penalty=2.0), 1, outputs=[1])
            + seqs_for(SamplingParams(temperature=0), 1, outputs=[1]))
    assert Sampler([])(logits, seqs).token_ids == [2, 1]


def test_min_tokens_bans_stop_and_eos():
    logits = torch.tensor([[0.0, 1.0, 9.0, 8.0, 0.5]])
    p = SamplingParams(temperature=0, min_tokens=2, stop_token_ids=[3])
    s = seqs_for(p, 1, outputs=[1])                    # 1 output so far < 2: EOS 2 and 3 banned
    assert Sampler([2])(logits, s).token_ids == [1]
    s = seqs_for(p, 1, outputs=[1, 1])
    assert Sampler([2])(logits, s).token_ids == [2]
    s = seqs_for(SamplingParams(temperature=0, min_tokens=2, ignore_eos=True), 1)
    assert Sampler([2])(logits, s).token_ids == [2]     # with ignore_eos, EOS is just a token


def test_logprobs_are_of_raw_logits():
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    s = seqs_for(SamplingParams(temperature=0, logprobs=2, presence_penalty=2.0), 1, outputs=[2])
    result = Sampler([])(logits, s)
    raw = logits.log_softmax(-1)[0]
    assert result.token_ids == [1]
    entry = result.logprobs[0]
    assert list(entry)[0] == 1 and set(entry) == {1, 2}
    assert all(abs(entry[t] - raw[t].item()) < 1e-6 for t in entry)


# stop conditions end to end ------------------------------------------------------------------
@pytest.fixture(scope="module")
def baseline(llama_notok_dir):
    llm = LLM(str(llama_notok_dir), block_size=8)
    prompt = {"prompt_token_ids": [9, 8, 7, 6, 5]}
    out = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=10, ignore_eos=True))[0]
    return llm, prompt, out.outputs[0].token_ids


def first_new(tokens):
    """(index, token) of the first output token, past index 0, not seen before it."""
    return next((k, t) for k, t in enumerate(tokens) if k > 0 and t not in tokens[:k])


def test_stop_token_ids_and_max_tokens(baseline):
    llm, prompt, base = baseline
    k, t = first_new(base)
    out = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=10, stop_token_ids=[t]))
    c = out[0].outputs[0]
    assert c.token_ids == base[:k + 1] and c.finish_reason == "stop" and c.stop_reason == t
    c = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))[0].outputs[0]
    assert c.token_ids == base[:3] and c.finish_reason == "length" and c.stop_reason is None


def test_min_tokens_end_to_end(baseline):
    llm, prompt, base = baseline
    first = base[0]
    c = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=10, min_tokens=3,
                                            stop_token_ids=[first]))[0].outputs[0]
    assert first not in c.token_ids[:3] and len(c.token_ids) >= 4


def test_eos_and_ignore_eos(baseline, tmp_path):
    """A checkpoint whose EOS is the token greedy decoding emits third."""
    llm, prompt, base = baseline
    k, eos = first_new(base)
    src = llm.engine.path
    for f in ("model.safetensors", "config.json"):
        shutil.copy(src / f, tmp_path / f)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["eos_token_id"] = eos
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    eos_llm = LLM(str(tmp_path), block_size=8)
    c = eos_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=10))[0].outputs[0]
    assert c.token_ids == base[:k + 1] and c.finish_reason == "stop" and c.stop_reason is None
    c = eos_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=10,
                                                ignore_eos=True))[0].outputs[0]
    assert c.token_ids == base and c.finish_reason == "length"


def _fmix32_ref(x):
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_noise_matches_its_int64_definition():
    """The int32 [B, V] hash gives the bits of the plain int64 murmur3 definition."""
    from litevllm.engine.sampler import uniform_noise
    g = torch.Generator().manual_seed(0)
    seeds = torch.randint(0, 2**62, (33,), generator=g)
    steps = torch.randint(0, 100_000, (33,), generator=g)
    m = 0xFFFFFFFF
    row = _fmix32_ref((_fmix32_ref(seeds & m) ^ (seeds >> 32) ^ (steps * 0x9E3779B1)) & m)
    cols = torch.arange(3001, dtype=torch.int64)
    x = _fmix32_ref(_fmix32_ref((cols[None, :] * 0x27D4EB2F + row[:, None]) & m) ^ row[:, None])
    want = ((x >> 9).to(torch.float32) + 0.5) / (1 << 23)
    got = uniform_noise(seeds, steps, 3001)
    assert torch.equal(got, want) and 0 < got.min() and got.max() < 1


def test_filtered_tokens_are_never_drawn_at_the_top_of_the_noise_range():
    """Token 5750 of this row's noise has the top hash, which 24-bit noise rounded to u = 1.0:
    an infinite score, NaN once the token is filtered, which argmax took."""
    from litevllm.ops import torch_ops
    seed, step, v = torch.tensor([3109731522060093331]), torch.tensor([542]), 6000
    assert torch_ops.uniform_noise(seed, step, v).max() < 1
    logits = torch.randn(1, v, generator=torch.Generator().manual_seed(0))
    token = torch_ops.sample(logits, torch.ones(1), torch.ones(1, dtype=torch.int64), torch.ones(1),
                             torch.zeros(1), torch.zeros(1, dtype=torch.bool), seed, step)
    assert token.item() == logits.argmax().item() != 5750


def test_picker_steps_continue_the_noise_stream():
    """Step j of a multi-step run samples what a single step j positions later samples."""
    torch.manual_seed(2)
    logits = torch.randn(5, 40)
    params = SamplingParams(temperature=0.7, top_k=20, seed=11)
    seqs = seqs_for(params, 5)
    pick = Sampler([]).picker(seqs)
    later = seqs_for(params, 5, outputs=(3, 4))   # two outputs on: the stream is 2 further
    assert torch.equal(pick(logits, 2), Sampler([]).picker(later)(logits, 0))
    assert not torch.equal(pick(logits, 0), pick(logits, 2))


def test_filters_are_on_values_so_tied_tokens_share_a_fate():
    """top-k keeps every token tied at the k-th largest logit; top-p weighs a token by the mass
    strictly above it, so a tie group enters or leaves whole; min-p compares logit - max with
    log(min_p). The torch reference and fused kernels share these rules."""
    from litevllm.ops.torch_ops import filter_logits
    logits = torch.tensor([[1.0, 2.0, 1.0, 0.0, 1.0]])  # p(2.0) = 0.447, each 1.0: 0.164

    def kept(top_k=5, top_p=1.0, min_p=0.0):
        out = filter_logits(logits, torch.tensor([top_k]), torch.tensor([top_p]),
                            torch.tensor([min_p]))
        return [i for i in range(5) if out[0, i] > float("-inf")]

    assert kept(top_k=2) == kept(top_k=4) == [0, 1, 2, 4]
    assert kept(top_k=1) == [1]
    assert kept(top_p=0.45) == [0, 1, 2, 4] and kept(top_p=0.44) == [1]
    assert kept(min_p=0.3) == [0, 1, 2, 4] and kept(min_p=0.4) == [1]   # e^-1 = 0.368
    # top-p weighs the mass within the top k: there 2.0 holds 0.475, not 0.447
    assert kept(top_k=2, top_p=0.47) == [1] and kept(top_p=0.47) == [0, 1, 2, 4]
    assert kept(top_k=2, top_p=0.48) == [0, 1, 2, 4]


def test_picker_sends_random_rows_to_the_sample_op(monkeypatch):
    """Random rows sample through the registry's ``sample`` op (a fused kernel on GPUs),
    temperature-only ones too; LITEVLLM_FUSED_SAMPLING=0 keeps the torch reference, where
    temperature-only rows skip the filters."""
    from litevllm.ops import torch_ops
    calls = []

    class Ops:
        def sample(self, *args):
            calls.append(args)
            return torch_ops.sample(*args)

    logits = torch.randn(3, 50)
    seqs = seqs_for(SamplingParams(temperature=0.6, top_p=0.9), 3)
    assert torch.equal(Sampler([], Ops()).picker(seqs)(logits, 1),
                       Sampler([]).picker(seqs)(logits, 1)) and len(calls) == 1
    plain = seqs_for(SamplingParams(temperature=0.6), 3)
    assert torch.equal(Sampler([], Ops()).picker(plain)(logits, 0),
                       Sampler([]).picker(plain)(logits, 0)) and len(calls) == 2
    monkeypatch.setenv("LITEVLLM_FUSED_SAMPLING", "0")
    Sampler([], Ops()).picker(seqs)(logits, 0)
    assert len(calls) == 2
