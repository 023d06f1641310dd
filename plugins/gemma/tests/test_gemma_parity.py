"""Gemma / Gemma 2 against transformers (eager attention) on tiny random checkpoints, on CPU."""
import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma2Config, GemmaConfig

from litevllm import LLM, SamplingParams

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32,  # head_dim != hidden / heads on purpose
            max_position_embeddings=128, rms_norm_eps=1e-6, pad_token_id=0, bos_token_id=2,
            eos_token_id=1)
LOGPROB_ATOL = 1e-4
TOPK = 5


def gemma_config():
    return GemmaConfig(num_hidden_layers=2, **TINY)


def gemma2_config(**kw):
    # small caps so soft-capping changes the result; window 8 is far shorter than the prompts
    base = dict(num_hidden_layers=4, sliding_window=8, query_pre_attn_scalar=16,
                attn_logit_softcapping=1.5, final_logit_softcapping=2.0)
    return Gemma2Config(**{**TINY, **base, **kw})


def make_checkpoint(path, config):
    """Random weights big enough for clear argmaxes; norm weights random so (1 + w) matters."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager",
                                             dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.3 if "norm" in name else 0.1)
    model.save_pretrained(path)
    return model.eval()


def hf_logprobs(model, ids) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    return logits.log_softmax(-1)


def prompts(lengths, vocab=256):
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]


def check_parity(path, hf, prompt_ids, max_tokens=8, **engine_kw):
    llm = LLM(str(path), max_num_seqs=8, **engine_kw)
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True,
                            logprobs=TOPK, prompt_logprobs=TOPK)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompt_ids], params)
    for prompt, out in zip(prompt_ids, outs):
        gen = out.outputs[0].token_ids
        assert len(gen) == max_tokens
        ref = hf_logprobs(hf, prompt + gen)  # teacher-forced on our tokens
        n = len(prompt)
        # greedy tokens: each one is HF's argmax given the same prefix
        assert ref[n - 1:-1].argmax(-1).tolist() == gen
        # logprobs of prompt positions (prefill) and generated positions (decode)
        rows = [(i, lp) for i, lp in enumerate(out.prompt_logprobs) if lp is not None]
        rows += [(n + j, lp) for j, lp in enumerate(out.outputs[0].logprobs)]
        assert len(rows) == n - 1 + max_tokens
        for pos, lp in rows:
            want = ref[pos - 1]
            tokens = list(lp)
            assert set(want.topk(TOPK).indices.tolist()) <= set(tokens)
            got = torch.tensor([lp[t] for t in tokens])
            torch.testing.assert_close(got, want[tokens], atol=LOGPROB_ATOL, rtol=0)


def test_gemma_parity(tmp_path):
    hf = make_checkpoint(tmp_path, gemma_config())
    check_parity(tmp_path, hf, prompts([5, 11, 17, 3]))


@pytest.mark.parametrize("layer_types", [None, ["full_attention", "sliding_attention",
                                                "sliding_attention", "full_attention"]])
def test_gemma2_parity_long_prompts(tmp_path, layer_types):
    """Prompts of 20-40 tokens with window 8; chunked prefill (16-token budget), block size 8."""
    hf = make_checkpoint(tmp_path, gemma2_config(layer_types=layer_types))
    check_parity(tmp_path, hf, prompts([21, 40, 33]), block_size=8, max_num_batched_tokens=16)


@pytest.mark.parametrize("change", [dict(attn_logit_softcapping=None),
                                    dict(final_logit_softcapping=None),
                                    dict(sliding_window=4096)])
def test_gemma2_features_matter(tmp_path, change):
    """The parity test would notice a missing soft-cap or window: HF's own outputs move."""
    make_checkpoint(tmp_path, gemma2_config())
    ids = prompts([30])[0]
    load = dict(attn_implementation="eager", dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tmp_path, **load)
    other = AutoModelForCausalLM.from_pretrained(tmp_path, **load, **change)
    diff = (hf_logprobs(base, ids) - hf_logprobs(other, ids)).abs().max().item()
    assert diff > 0.05
