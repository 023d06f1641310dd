"""Gemma / Gemma 2 on CUDA in bf16 against transformers, with kernels="auto" (Triton when
installed): random checkpoints with the real head_dim (256), soft-caps and a sliding window
shorter than the prompts."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
pytest.importorskip("litevllm_gemma")

from transformers import Gemma2Config, GemmaConfig  # noqa: E402

from litevllm import LLM, SamplingParams  # noqa: E402

VOCAB = 2048
COMMON = dict(vocab_size=VOCAB, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, head_dim=256,
              max_position_embeddings=512, pad_token_id=0, bos_token_id=2, eos_token_id=1)
CONFIGS = {
    "gemma": GemmaConfig(**COMMON),
    "gemma2": Gemma2Config(**COMMON, sliding_window=32, query_pre_attn_scalar=256,
                           attn_logit_softcapping=50.0, final_logit_softcapping=30.0),
}
MAX_TOKENS = 24
GAP_TOL = 0.25  # a token may differ from HF's argmax only where HF's top two are this close


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def checkpoint(request, random_hf_checkpoint):
    # Gemma norms scale by (1 + w): centre them on 0
    return random_hf_checkpoint(request.param, CONFIGS[request.param], norm=(0.0, 0.3),
                                attn_implementation="eager")


def test_greedy_matches_hf_bf16(checkpoint):
    path, hf = checkpoint
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (7, 45, 100, 150)]
    llm = LLM(str(path), kernels="auto", max_num_seqs=8, dtype="bfloat16")
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True, logprobs=1)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    matched = total = 0
    for prompt, out in zip(prompts, outs):
        gen = out.outputs[0].token_ids
        assert len(gen) == MAX_TOKENS
        with torch.no_grad():  # teacher-forced on our tokens, so one miss does not cascade
            logits = hf(torch.tensor([prompt + gen], device="cuda")).logits[0].float()
        ref = logits[len(prompt) - 1:-1]
        best = ref.max(-1).values
        idx = torch.tensor(gen, device="cuda")[:, None]
        ours = ref.gather(1, idx)[:, 0]
        gap = (best - ours).max().item()
        assert gap <= GAP_TOL, f"a token HF ranks {gap:.3f} below its argmax (prompt {len(prompt)})"
        matched += (ref.argmax(-1).cpu() == torch.tensor(gen)).sum().item()
        total += len(gen)
        lp = torch.tensor([next(iter(d.values())) for d in out.outputs[0].logprobs])
        want = ref.log_softmax(-1).gather(1, idx)[:, 0].cpu()
        torch.testing.assert_close(lp, want, atol=0.2, rtol=0)
    assert matched >= 0.9 * total, f"only {matched}/{total} greedy tokens equal HF's argmax"
