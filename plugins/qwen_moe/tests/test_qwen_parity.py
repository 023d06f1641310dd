"""Parity with Hugging Face transformers on tiny random Qwen checkpoints (float32, CPU)."""
import pytest
import torch

from litevllm import LLM, SamplingParams
from litevllm.testing import logprob_rows
from qwen_test_utils import VARIANTS, VOCAB, hf_log_softmax, save_hf

PROMPTS = [[5, 17, 99, 3, 120, 42, 7, 8, 9, 10, 11, 100, 101, 102, 103, 104, 127],
           [30, 12, 77],
           list(range(1, 26)),
           [64]]
MAX_TOKENS = 8


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_greedy_and_logits_match_hf(variant, tmp_path):
    hf = save_hf(variant, tmp_path)
    llm = LLM(str(tmp_path), block_size=8, max_num_seqs=8, device="cpu", dtype="float32")
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True,
                            logprobs=VOCAB, prompt_logprobs=VOCAB)
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params)  # one batch
    for prompt, out in zip(PROMPTS, outs):
        gen = out.outputs[0].token_ids
        assert len(gen) == MAX_TOKENS
        ref = hf_log_softmax(hf, prompt + gen)
        n = len(prompt)
        # each generated token is HF's argmax at its position (teacher forced)
        assert gen == ref[n - 1:-1].argmax(-1).tolist()
        # decode-step and prompt log-probabilities over the whole vocabulary match HF
        torch.testing.assert_close(logprob_rows(out.outputs[0].logprobs, VOCAB), ref[n - 1:-1],
                                   atol=2e-4, rtol=1e-4)
        if n > 1:
            torch.testing.assert_close(logprob_rows(out.prompt_logprobs[1:], VOCAB), ref[:n - 1],
                                       atol=2e-4, rtol=1e-4)


def test_variants_exercise_what_they_claim(tmp_path):
    """The model structure follows the config: MoE layers, shared experts, windows, biases."""
    def model(variant):
        save_hf(variant, tmp_path / variant)
        return LLM(str(tmp_path / variant), device="cpu", dtype="float32",
                   block_size=8).engine.model

    from litevllm.plugin_api import FusedMoE
    step2 = model("qwen2-moe-step2").model.layers
    assert [isinstance(getattr(l.mlp, "experts", None), FusedMoE) for l in step2] == \
        [False, True, False]
    assert step2[1].mlp.shared_expert is not None and not step2[1].mlp.experts.renormalize
    assert step2[1].mlp.experts.shared_experts == 0  # 48 is not a multiple of 32: its own MLP
    only = model("qwen2-moe-mlp-only").model.layers
    assert [hasattr(l.mlp, "experts") for l in only] == [False, True, True]
    folded = model("qwen2-moe-folded").model.layers[0].mlp
    assert folded.shared_expert is None and folded.experts.shared_experts == 2
    assert folded.experts.w13.shape == (10, 64, 64)  # 8 routed + 2 shared slices
    q3 = model("qwen3-moe").model.layers
    assert [hasattr(l.mlp, "experts") for l in q3] == [True, True, False]
    assert q3[0].mlp.shared_expert is None and q3[0].mlp.experts.renormalize
    assert q3[0].self_attn.qkv_proj.bias is None and q3[0].self_attn.head_dim == 24
    q2 = model("qwen2")
    assert [l.self_attn.spec.sliding_window for l in q2.model.layers] == [None] * 3
    assert q2.model.layers[0].self_attn.qkv_proj.bias is not None
    assert q2.model.layers[0].self_attn.o_proj.bias is None and q2.lm_head is q2.model.embed_tokens
    sliding = model("qwen2-sliding").model.layers
    assert [l.self_attn.spec.sliding_window for l in sliding] == [None, 5, 5]
