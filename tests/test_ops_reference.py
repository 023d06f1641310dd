"""The torch reference ops against transformers' own modules (LlamaRMSNorm, GemmaRMSNorm,
ACT2FN), the independent reference every kernel provider is held to. Inputs span tiny
activations, where the placement of epsilon decides the result (rms ~ sqrt(eps) and below),
to large ones."""
import pytest
import torch

from litevllm.ops import torch_ops
from litevllm.testing import HF_ACTIVATIONS, assert_rms_norm_matches_hf, hf_act_and_mul

# float32: the same formula up to summation order; bf16: transformers rounds the normalized
# value (Llama) or the activation before the multiply, the op rounds once: three roundings of
# u = 2^-8 bound the difference
RTOL = {torch.float32: 1e-5, torch.bfloat16: 3 * 2.0 ** -8}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("eps", [1e-6, 1e-5])
@pytest.mark.parametrize("offset", [0.0, 1.0], ids=["llama", "gemma"])
@pytest.mark.parametrize("residual", [False, True])
def test_rms_norm_matches_transformers(dtype, eps, offset, residual):
    assert_rms_norm_matches_hf(torch_ops.rms_norm, 96, eps, offset, residual, dtype,
                               rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("op", sorted(HF_ACTIVATIONS))
@pytest.mark.parametrize("scale", [1e-3, 1.0, 4.0])
def test_act_and_mul_matches_transformers(dtype, op, scale):
    x = (torch.randn(9, 2 * 80, generator=torch.Generator().manual_seed(1)) * scale).to(dtype)
    got, want = getattr(torch_ops, op)(x), hf_act_and_mul(op, x)
    # atol: far in the negative tail gelu_tanh is a cancellation, tiny next to the row maxima
    torch.testing.assert_close(got, want, rtol=RTOL[dtype],
                               atol=1e-6 * want.abs().max().item())


def test_every_activation_name_maps_to_the_matching_op():
    """layers.ACTIVATIONS (the hidden_act names the decoder accepts) against transformers
    ("gelu_tanh" is not a transformers name: an alias for gelu_pytorch_tanh)."""
    from transformers.activations import ACT2FN

    from litevllm.model.layers import ACTIVATIONS
    x = torch.randn(4, 64) * 3
    for name, canonical in ACTIVATIONS.items():
        op = f"{canonical}_and_mul"
        name = "gelu_pytorch_tanh" if name == "gelu_tanh" else name
        a, b = x.chunk(2, dim=-1)
        torch.testing.assert_close(getattr(torch_ops, op)(x), ACT2FN[name](a) * b,
                                   rtol=1e-5, atol=1e-6)
