"""Fixtures: a tiny byte-level tokenizer's vocabulary size, and teacher-forced comparison
of the engine against a transformers model holding the same dequantized weights."""
import pytest
import torch

from litevllm import LLM, SamplingParams

PROMPTS = [[5, 17, 99, 3, 250, 42, 7, 8, 9, 10, 11, 120, 130, 140], [300, 12, 77], [64]]
VOCAB = 384
MAX_TOKENS = 8


def generate(path, **llm_kwargs):
    llm = LLM(str(path), block_size=8, **llm_kwargs)
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True,
                            logprobs=VOCAB, prompt_logprobs=VOCAB)
    return llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params)


def rows(entries):
    out = torch.full((len(entries), VOCAB), float("nan"))
    for i, entry in enumerate(entries):
        for tok, lp in entry.items():
            out[i, tok] = lp
    return out


def assert_matches_hf(outputs, hf, atol=2e-4, rtol=1e-4, tokens=True):
    """Greedy tokens are HF's argmax and logprobs match HF's log_softmax (teacher forced)."""
    for prompt, out in zip(PROMPTS, outputs):
        gen = out.outputs[0].token_ids
        with torch.no_grad():
            ref = hf(torch.tensor([prompt + gen])).logits[0].float().log_softmax(-1)
        n = len(prompt)
        if tokens:
            assert gen == ref[n - 1:-1].argmax(-1).tolist()
        torch.testing.assert_close(rows(out.outputs[0].logprobs), ref[n - 1:-1], atol=atol,
                                   rtol=rtol)
        if n > 1:
            torch.testing.assert_close(rows(out.prompt_logprobs[1:]), ref[:n - 1], atol=atol,
                                       rtol=rtol)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("quant_models")
