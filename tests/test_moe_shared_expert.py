"""A shared expert added in the fused-MoE op's final sum, and ops written before that argument."""
from types import SimpleNamespace

import pytest
import torch

from litevllm import kinds
from litevllm.model.moe import FusedMoE
from litevllm.ops import torch_ops
from litevllm.quant.unquantized import UnquantizedMoEMethod, takes_shared_expert


def inputs(t=5, h=16, inter=8, e=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(t, h, generator=g), torch.randn(e, 2 * inter, h, generator=g) / 4,
            torch.randn(e, h, inter, generator=g) / 3, torch.randn(t, e, generator=g),
            torch.randn(t, h, generator=g), torch.randn(t, 1, generator=g))


def old_fused_moe(hidden, w13, w2, router_logits, top_k, renormalize, activation="silu"):
    """An op written for plugin API 1.0: no shared / shared_gate."""
    return torch_ops.fused_moe(hidden, w13, w2, router_logits, top_k, renormalize, activation)


def test_reference_adds_the_gated_shared_expert_as_transformers_does():
    x, w13, w2, logits, shared, gate = inputs()
    plain = torch_ops.fused_moe(x, w13, w2, logits, 2, False)
    got = torch_ops.fused_moe(x, w13, w2, logits, 2, False, shared=shared, shared_gate=gate)
    torch.testing.assert_close(got, plain + torch.sigmoid(gate) * shared)
    ungated = torch_ops.fused_moe(x, w13, w2, logits, 2, False, shared=shared)
    torch.testing.assert_close(ungated, plain + shared)


def test_an_op_without_the_shared_arguments_still_registers_and_serves():
    assert kinds._op("fused_moe", old_fused_moe) is None  # optional reference args may be absent
    assert kinds._op("fused_moe", lambda hidden, w13: None) is not None  # required ones may not
    assert not takes_shared_expert(old_fused_moe) and takes_shared_expert(torch_ops.fused_moe)
    x, w13, w2, logits, shared, gate = inputs()
    want = torch_ops.fused_moe(x, w13, w2, logits, 2, True, shared=shared, shared_gate=gate)
    for op in (old_fused_moe, torch_ops.fused_moe):
        layer = SimpleNamespace(ops=SimpleNamespace(fused_moe=op), w13=w13, w2=w2, top_k=2,
                                renormalize=True, activation="silu")
        got = UnquantizedMoEMethod().apply(layer, x, logits, shared, gate)
        torch.testing.assert_close(got, want)


class _Unfused:  # a MoE method without fuses_shared_expert: FusedMoE adds the shared expert
    def apply(self, layer, x, router_logits):
        return torch_ops.fused_moe(x, layer.w13, layer.w2, router_logits, 2, True)


def test_fused_moe_layer_adds_for_methods_that_do_not_fuse_it():
    x, w13, w2, logits, shared, gate = inputs()
    layer = FusedMoE.__new__(FusedMoE)
    torch.nn.Module.__init__(layer)
    layer.method, layer.w13, layer.w2 = _Unfused(), w13, w2
    want = torch_ops.fused_moe(x, w13, w2, logits, 2, True, shared=shared, shared_gate=gate)
    torch.testing.assert_close(layer(x, logits, shared, gate), want)
    with pytest.raises(ValueError, match="shared_gate needs shared"):
        layer(x, logits, None, gate)
