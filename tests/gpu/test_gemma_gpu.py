"""Gemma / Gemma 2 on CUDA against transformers, with kernels="auto" (which must be Triton):
random checkpoints with the real head_dim (256), soft-caps and a sliding window shorter than
the prompts; float32 exact greedy with tight logprobs, bf16 logprobs within tolerances from
bf16 rounding (see gpu_parity)."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
pytest.importorskip("litevllm_gemma")

from gpu_parity import Bf16Check, assert_triton_ran, check_float32, generate  # noqa: E402
from transformers import Gemma2Config, GemmaConfig  # noqa: E402

VOCAB = 2048
# untied lm_head: tied, the (sqrt(hidden)-scaled) input embedding dominates the logits and the
# argmax mostly repeats the current token, whatever attention computed
COMMON = dict(vocab_size=VOCAB, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, head_dim=256,
              max_position_embeddings=512, pad_token_id=0, bos_token_id=2, eos_token_id=1,
              tie_word_embeddings=False)
CONFIGS = {
    "gemma": GemmaConfig(**COMMON),
    "gemma2": Gemma2Config(**COMMON, sliding_window=32, query_pre_attn_scalar=256,
                           attn_logit_softcapping=50.0, final_logit_softcapping=30.0),
}
# spread the logits (wider top-2 gaps); Gemma 2's final soft-cap at 30 limits the useful scale
LOGIT_SCALE = {"gemma": 8.0, "gemma2": 4.0}
MAX_TOKENS = 24


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def checkpoint(request, random_hf_checkpoint):
    # Gemma norms scale by (1 + w): centre them on 0
    return random_hf_checkpoint(request.param, CONFIGS[request.param], norm=(0.0, 0.3),
                                logit_scale=LOGIT_SCALE[request.param], norm_offset=1.0,
                                attn_implementation="eager")


def prompts():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (7, 45, 100, 150)]


def test_float32_matches_hf_exactly(checkpoint):
    path, hf = checkpoint
    ps = prompts()
    llm, outs = generate(path, ps, MAX_TOKENS, "float32")
    assert_triton_ran(llm, "gated_linear")
    for prompt, out in zip(ps, outs):
        check_float32(hf["float32"], prompt, out)


def test_bf16_logprobs_match_hf_bf16(checkpoint):
    path, hf = checkpoint
    ps = prompts()
    llm, outs = generate(path, ps, MAX_TOKENS, "bfloat16")
    assert_triton_ran(llm, "gated_linear")
    check = Bf16Check()
    for prompt, out in zip(ps, outs):
        check.add(hf["bfloat16"], prompt, out)
    check.finish()
