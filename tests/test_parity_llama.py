"""Parity with Hugging Face transformers on tiny random checkpoints (float32, CPU)."""
import pytest
import torch

from litevllm import LLM, SamplingParams
from litevllm.testing import logprob_rows

PROMPTS = [[5, 17, 99, 3, 250, 42, 7, 8, 9, 10, 11, 120, 130, 140, 150, 160, 170, 180, 190, 200],
           [300, 12, 77],
           [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
            25, 26, 27, 28, 29, 30],
           [64]]
MAX_TOKENS = 12

VARIANTS = {
    "llama": dict(arch="llama"),
    "llama3-rope": dict(arch="llama", max_position_embeddings=256, rope_parameters=dict(
        rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
        high_freq_factor=4.0, original_max_position_embeddings=16)),
    "linear-rope": dict(arch="llama", rope_parameters=dict(rope_type="linear", rope_theta=10000.0,
                                                           factor=4.0)),
    "dynamic-rope": dict(arch="llama", rope_parameters=dict(rope_type="dynamic",
                                                            rope_theta=10000.0, factor=2.0)),
    "mistral-sliding": dict(arch="mistral", sliding_window=8),
}


def hf_logits(model, token_ids: list[int]) -> torch.Tensor:
    """[len(token_ids), V] float32 logits of a HF model (teacher forced)."""
    with torch.no_grad():
        return model(torch.tensor([token_ids])).logits[0].float()


def generate(path, vocab, **llm_kwargs):
    llm = LLM(str(path), block_size=8, **llm_kwargs)
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True,
                            logprobs=vocab, prompt_logprobs=vocab)
    return llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_greedy_and_logits_match_hf(variant, make_model, hf_model, vocab_size):
    path = make_model(variant, **VARIANTS[variant])
    hf = hf_model(path)
    for prompt, out in zip(PROMPTS, generate(path, vocab_size)):
        gen = out.outputs[0].token_ids
        assert len(gen) == MAX_TOKENS and out.outputs[0].finish_reason == "length"
        ref = hf_logits(hf, prompt + gen).log_softmax(-1)
        n = len(prompt)
        # every generated token is HF's argmax at its position (teacher forced)
        assert gen == ref[n - 1:-1].argmax(-1).tolist()
        # logprobs of generated tokens and of prompt tokens match HF's log_softmax
        got = logprob_rows(out.outputs[0].logprobs, vocab_size)
        torch.testing.assert_close(got, ref[n - 1:-1], atol=2e-4, rtol=1e-4)
        assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == n
        if n > 1:
            got = logprob_rows(out.prompt_logprobs[1:], vocab_size)
            torch.testing.assert_close(got, ref[:n - 1], atol=2e-4, rtol=1e-4)


def test_rope_scaling_and_window_matter(make_model, hf_model, llama_dir):
    """The variants above really differ from plain Llama (same seed, same weights), so
    parity there is not parity with the unscaled model by accident."""
    ids = PROMPTS[2]
    plain = hf_logits(hf_model(llama_dir), ids)
    for variant in ("llama3-rope", "linear-rope"):
        other = hf_logits(hf_model(make_model(variant, **VARIANTS[variant])), ids)
        assert (other - plain).abs().max() > 1e-2, variant
    from transformers import AutoModelForCausalLM
    path = make_model("mistral-sliding", **VARIANTS["mistral-sliding"])
    full = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, sliding_window=None,
                                                attn_implementation="eager").eval()
    windowed = hf_logits(hf_model(path), ids)
    assert torch.allclose(hf_logits(full, ids)[:8], windowed[:8], atol=1e-5)
    assert (hf_logits(full, ids)[8:] - windowed[8:]).abs().max() > 1e-2


def test_batched_equals_one_at_a_time(llama_dir):
    llm = LLM(str(llama_dir), block_size=8, enable_prefix_caching=False)
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    prompts = [{"prompt_token_ids": p} for p in PROMPTS]
    batched = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
    single = [llm.generate(p, params)[0].outputs[0].token_ids for p in prompts]
    assert batched == single


def test_dummy_weights_from_config_only_dir(tmp_path, llama_dir):
    (tmp_path / "config.json").write_text((llama_dir / "config.json").read_text())
    llm = LLM(str(tmp_path), load_format="dummy")
    out = llm.generate({"prompt_token_ids": [1, 2, 3]},
                       SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))[0]
    assert len(out.outputs[0].token_ids) == 4
    weight = llm.engine.model.model.layers[0].mlp.down_proj.weight
    assert weight.abs().max() > 0 and weight.abs().max() <= 0.02
    # drawn by a generator seeded with the engine's seed: same seed, same weights
    same = LLM(str(tmp_path), load_format="dummy").engine.model.model.layers[0].mlp.down_proj
    other = LLM(str(tmp_path), load_format="dummy", seed=1).engine.model.model.layers[0]
    assert torch.equal(same.weight, weight)
    assert not torch.equal(other.mlp.down_proj.weight, weight)
