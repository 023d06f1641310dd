"""The Triton norm and activation kernels against transformers' own modules (LlamaRMSNorm,
GemmaRMSNorm, ACT2FN) in float32 through the interpreter, including tiny activations where
the placement of epsilon decides the result (bf16 on a GPU: tests/gpu)."""
import pytest
import torch

from litevllm.testing import HF_ACTIVATIONS, hf_act_and_mul, hf_rms_norm, norm_test_inputs
from litevllm_triton import ops


@pytest.mark.parametrize("eps", [1e-6, 1e-5])
@pytest.mark.parametrize("offset", [0.0, 1.0], ids=["llama", "gemma"])
@pytest.mark.parametrize("residual", [False, True])
def test_rms_norm_matches_transformers(eps, offset, residual):
    x, w = norm_test_inputs(96)
    w = w - offset  # gemma stores weight - 1
    res = torch.flip(x, (0,)) * 0.5 if residual else None
    got, want = ops.rms_norm(x, w, eps, res, offset), hf_rms_norm(x, w, eps, res, offset)
    if residual:
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
        got, want = got[0], want[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)


@pytest.mark.parametrize("op", sorted(HF_ACTIVATIONS))
@pytest.mark.parametrize("scale", [1e-3, 1.0, 4.0])
def test_act_and_mul_matches_transformers(op, scale):
    x = torch.randn(9, 2 * 80) * scale
    got, want = getattr(ops, op)(x), hf_act_and_mul(op, x)
    # atol: far in the negative tail gelu_tanh is a cancellation, tiny next to the row maxima
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * want.abs().max().item())
