"""Engine-vs-transformers checks shared by the GPU parity tests.

transformers scores the engine's own tokens (teacher forcing), so at every position the check
sees whether the engine's token was transformers' argmax given the same prefix; passing at
every position means the whole generated sequence is transformers' greedy sequence, except
after a justified near-tie.

- float32: each token is transformers' argmax (a difference only where its top two logits
  are within F32_ATOL), and every returned logprob within F32_ATOL of transformers'.
- bfloat16 (against transformers in bf16): both sides round the logits to bf16, a spacing of
  2u|logit| (u = 2^-8) at the largest logit. The chosen token's logprob must be within three
  spacings at each position and within one on average, and the token may differ from
  transformers' argmax only by less than three spacings.
"""
from __future__ import annotations

import torch

from litevllm import LLM, SamplingParams

U_BF16 = 2.0 ** -8  # unit roundoff of bfloat16 (8 significant bits)
F32_ATOL = 1e-3     # float32: logprob tolerance, and the largest logit gap taken for a tie
TOP = 5             # logprobs returned per position besides the chosen token's


def generate(path, prompts, max_tokens, dtype, kernels="auto", **options):
    """Greedy outputs (``CompletionOutput`` with logprobs) and the engine."""
    llm = LLM(str(path), kernels=kernels, dtype=dtype,
              **{"max_num_seqs": 8, "gpu_memory_utilization": 0.3, **options})
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, logprobs=TOP)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    for out in outs:
        assert len(out.outputs[0].token_ids) == max_tokens
    return llm, [o.outputs[0] for o in outs]


def assert_triton_ran(llm, act_op: str) -> None:
    """kernels="auto" on CUDA: Triton attention and Triton for every op the model used."""
    used = llm.engine.kernels_in_use
    assert used["attention"] == "triton", used
    assert {"rms_norm", "rotary_embedding", act_op} <= used.keys(), used
    assert all(p == "triton" for op, p in used.items() if op != "attention"), used


def hf_logits(hf, prompt, gen) -> torch.Tensor:
    """transformers' float32 logits [len(gen), V] predicting each of ``gen``."""
    with torch.no_grad():
        ids = torch.tensor([prompt + gen], device="cuda")
        return hf(ids).logits[0, len(prompt) - 1:-1].float()


def _where(prompt, i) -> str:
    return f"prompt of {len(prompt)} tokens, generated position {i}"


def check_float32(hf, prompt, out) -> None:
    assert torch.get_float32_matmul_precision() == "highest"  # transformers' side is IEEE too
    gen = out.token_ids
    ref = hf_logits(hf, prompt, gen)
    idx = torch.tensor(gen, device="cuda")[:, None]
    gap = ref.max(-1).values - ref.gather(1, idx)[:, 0]
    for i in (gap > F32_ATOL).nonzero()[:, 0].tolist():
        raise AssertionError(f"{_where(prompt, i)}: token {gen[i]}, transformers' argmax "
                             f"{int(ref[i].argmax())} (logit gap {gap[i]:.3g})")
    lp = ref.log_softmax(-1).cpu()
    for i, entry in enumerate(out.logprobs):
        toks, vals = list(entry), torch.tensor(list(entry.values()))
        diff = (vals - lp[i, toks]).abs().max().item()
        assert diff <= F32_ATOL, f"{_where(prompt, i)}: logprobs differ by {diff:.3g}"
        kth = lp[i].topk(TOP).values[-1].item()  # the returned tokens are transformers' top
        assert vals.min().item() >= kth - F32_ATOL, f"{_where(prompt, i)}: not the top {TOP}"


class Bf16Check:
    """Accumulates the bf16 comparison over prompts; ``finish()`` checks the averages."""

    def __init__(self):
        self.diffs, self.spacing, self.gaps = [], [], []

    def add(self, hf16, prompt, out) -> None:
        gen = out.token_ids
        ref = hf_logits(hf16, prompt, gen)
        idx = torch.tensor(gen, device="cuda")[:, None]
        spacing = 2 * U_BF16 * ref.abs().max(-1).values.cpu()  # bf16 spacing at the top logit
        tol = 3 * spacing
        want = ref.log_softmax(-1).gather(1, idx)[:, 0].cpu()
        ours = torch.tensor([entry[t] for entry, t in zip(out.logprobs, gen)])
        diff = (ours - want).abs()
        gap = (ref.max(-1).values - ref.gather(1, idx)[:, 0]).cpu()
        for i in range(len(gen)):
            assert gap[i] <= tol[i], (f"{_where(prompt, i)}: token {gen[i]} is {gap[i]:.3g} "
                                      f"below transformers' argmax (tolerance {tol[i]:.3g})")
            assert diff[i] <= tol[i], (f"{_where(prompt, i)}: logprob {ours[i]:.4f}, "
                                       f"transformers {want[i]:.4f} (tolerance {tol[i]:.3g})")
        top2 = ref.topk(2, -1).values
        self.diffs.append(diff)
        self.spacing.append(spacing)
        self.gaps.append((top2[:, 0] - top2[:, 1]).cpu())

    def finish(self) -> None:
        diff, spacing = torch.cat(self.diffs), torch.cat(self.spacing)
        assert diff.mean() <= spacing.mean(), (f"mean |logprob - transformers| {diff.mean():.3g} "
                                               f"> one bf16 spacing {spacing.mean():.3g}")
        # the check has power: transformers' typical top-2 gap exceeds the per-position
        # tolerance, so a wrong path (a token it ranks lower) cannot pass
        gap = torch.cat(self.gaps).median()
        assert gap >= 3 * spacing.mean(), f"median top-2 gap {gap:.3g} too small for the test"


def same_until_tie(got, ref_out, where: str) -> None:
    """``got`` tokens equal the reference output's over the whole sequence, except after a
    first difference where the reference's top two logprobs are within F32_ATOL."""
    want = ref_out.token_ids
    assert len(got) == len(want), where
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            top = sorted(ref_out.logprobs[i].values(), reverse=True)
            assert top[0] - top[1] <= F32_ATOL, (f"{where}, position {i}: token {a}, reference "
                                                 f"{b} (its top-2 gap {top[0] - top[1]:.3g})")
            return
