"""The Triton norm and activation kernels against transformers' own modules (LlamaRMSNorm,
GemmaRMSNorm, ACT2FN) in float32 through the interpreter, including tiny activations where
the placement of epsilon decides the result (bf16 on a GPU: tests/gpu)."""
import pytest
import torch

from litevllm.testing import HF_ACTIVATIONS, assert_rms_norm_matches_hf, hf_act_and_mul
from litevllm_triton import ops


@pytest.mark.parametrize("eps", [1e-6, 1e-5])
@pytest.mark.parametrize("offset", [0.0, 1.0], ids=["llama", "gemma"])
@pytest.mark.parametrize("residual", [False, True])
def test_rms_norm_matches_transformers(eps, offset, residual):
    assert_rms_norm_matches_hf(ops.rms_norm, 96, eps, offset, residual)


@pytest.mark.parametrize("op", sorted(HF_ACTIVATIONS))
@pytest.mark.parametrize("scale", [1e-3, 1.0, 4.0])
def test_act_and_mul_matches_transformers(op, scale):
    x = torch.randn(9, 2 * 80) * scale
    got, want = getattr(ops, op)(x), hf_act_and_mul(op, x)
    # atol: far in the negative tail gelu_tanh is a cancellation, tiny next to the row maxima
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * want.abs().max().item())
