"""A shared expert added in the fused-MoE op's final sum, and ops written before that argument."""
from types import SimpleNamespace

import pytest
import torch

from litevllm import kinds
from litevllm.model.moe import FusedMoE, route_expert_tensor
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


def split_shared(w_gate_up, w_down, n):
    """A shared expert's gate_up [2*S*I, H] and down [H, S*I] as n more experts' w13/w2 slices."""
    gate, up = w_gate_up.chunk(2, 0)
    w13 = torch.stack([torch.cat([g, u]) for g, u in zip(gate.chunk(n), up.chunk(n))])
    return w13, torch.stack(w_down.chunk(n, 1))


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("renormalize", [True, False])
def test_shared_expert_folded_into_more_experts_equals_the_separate_mlp(gated, renormalize):
    """shared_experts=S: the last S experts, taken by every token (weight sigmoid(gate) or 1),
    give what the shared expert run as its own MLP and added gives."""
    x, w13, w2, logits, _, gate = inputs(t=9, e=6)
    g = torch.Generator().manual_seed(1)
    w_gate_up, w_down = torch.randn(2 * 3 * 8, 16, generator=g) / 4, torch.randn(16, 24, generator=g) / 5
    shared = torch_ops.silu_and_mul(x @ w_gate_up.t()) @ w_down.t()
    want = torch_ops.fused_moe(x, w13, w2, logits, 2, renormalize, shared=shared,
                               shared_gate=gate if gated else None)
    s13, s2 = split_shared(w_gate_up, w_down, 3)
    folded_logits = torch.cat([logits, gate], 1) if gated else logits
    got = torch_ops.fused_moe(x, torch.cat([w13, s13]), torch.cat([w2, s2]), folded_logits, 2,
                              renormalize, shared_experts=3)
    torch.testing.assert_close(got, want)
    weights, ids = torch_ops.add_shared_slots(*torch_ops.moe_route(logits, 2, renormalize),
                                              folded_logits, 6, 3)
    assert ids[:, 2:].tolist() == [[6, 7, 8]] * 9
    torch.testing.assert_close(weights[:, 2:], (torch.sigmoid(gate) if gated else
                                                torch.ones(9, 1)).expand(9, 3))


@pytest.mark.parametrize("cols,shared_experts,match", [
    (8, 3, r"\[T=9, 6 or 7\]"), (6, 0, r"\[T=9, 9\]"), (9, 9, "shared_experts must be")])
def test_folded_router_logits_are_checked(cols, shared_experts, match):
    x, w13, w2, *_ = inputs(t=9, e=9)
    with pytest.raises(ValueError, match=match):
        torch_ops.fused_moe(x, w13, w2, torch.zeros(9, cols), 2, True,
                            shared_experts=shared_experts)


def test_route_expert_tensor_sends_a_folded_shared_expert_to_its_experts():
    folded = {"m.layers.1.mlp.shared_expert": "m.layers.1.mlp.experts"}
    assert route_expert_tensor("m.layers.1.mlp.shared_expert.up_proj", "weight", folded) == \
        ("m.layers.1.mlp.experts", "w13", ("shared", 1))
    assert route_expert_tensor("m.layers.1.mlp.shared_expert.down_proj", "weight", folded) == \
        ("m.layers.1.mlp.experts", "w2", ("shared", 0))
    assert route_expert_tensor("m.layers.2.mlp.shared_expert.up_proj", "weight", folded) is None
    assert route_expert_tensor("m.layers.1.mlp.shared_expert.up_proj", "weight") is None


def test_shared_expert_slots_fold_only_unquantized_float_experts():
    """Folding needs the scheme's MoE method to fold, the shared expert's linears to stay
    unquantized (GGUF keeps them packed, fp8 quantizes them) and the op to take the argument."""
    from litevllm.model.moe import shared_expert_slots
    from litevllm.plugin_api import QuantConfig, UnquantizedMethod
    from litevllm.testing import model_context
    ctx = model_context("cpu")
    args = ("m.mlp.experts", 64, 32, "m.mlp.shared_expert")
    assert shared_expert_slots(ctx, *args) == 2
    assert shared_expert_slots(ctx, "m.mlp.experts", 48, 32, "m.mlp.shared_expert") == 0

    class PackedLinears(QuantConfig):  # dense experts, quantized linears (as GGUF's)
        name = "packed"

        def method_for(self, prefix):
            return type("Packed", (UnquantizedMethod,), {})()

        def moe_method_for(self, prefix):
            return UnquantizedMoEMethod()
    assert shared_expert_slots(model_context("cpu", quant=PackedLinears()), *args) == 0
    ctx.ops.fused_moe = old_fused_moe  # an op written for API 1.0
    assert shared_expert_slots(ctx, *args) == 0


def test_fused_moe_layer_rejects_bad_shared_experts():
    from litevllm.testing import model_context
    ctx = model_context("cpu")
    with pytest.raises(ValueError, match="shared_experts must be >= 0"):
        FusedMoE(4, 2, 16, 8, ctx, prefix="m.experts", shared_experts=-1)
    with pytest.raises(ValueError, match="shared_prefix"):
        FusedMoE(4, 2, 16, 8, ctx, prefix="m.experts", shared_experts=2)
    layer = FusedMoE(4, 2, 16, 8, ctx, prefix="m.experts", shared_experts=2,
                     shared_prefix="m.shared_expert")
    assert layer.w13.shape == (6, 16, 16) and layer.w2.shape == (6, 16, 8)
    with pytest.raises(ValueError, match="folded"):
        layer(torch.zeros(3, 16), torch.zeros(3, 5), torch.zeros(3, 16))
    with pytest.raises(ValueError, match="top_k must be in"):
        torch_ops.fused_moe(torch.zeros(3, 16), layer.w13, layer.w2, torch.zeros(3, 4), 5, True,
                            shared_experts=2)
