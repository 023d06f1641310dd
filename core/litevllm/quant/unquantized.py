"""The built-in unquantized method: dense weights in the model's dtype."""
from __future__ import annotations

import torch
from torch import nn

from litevllm.kinds import op_takes
from litevllm.ops.torch_ops import add_shared_expert
from litevllm.quant.base import QuantConfig, QuantMethod


def takes_shared_expert(op) -> bool:
    """Whether a ``fused_moe`` op accepts ``shared`` / ``shared_gate`` (added after 1.0)."""
    return op_takes(op, "shared")


def fused_moe_with_shared(op, *args, shared=None, shared_gate=None,
                          shared_experts: int = 0) -> torch.Tensor:
    """``op(*args)`` (a ``fused_moe`` op) with a shared expert added: by the op where it takes
    ``shared``, else here (an op written for plugin API 1.0); or folded into the experts
    (``shared_experts``, only passed where the layer folded it: ``shared_expert_slots``)."""
    if shared_experts:
        return op(*args, shared_experts=shared_experts)
    if shared is None:
        return op(*args)
    if takes_shared_expert(op):
        return op(*args, shared=shared, shared_gate=shared_gate)
    return add_shared_expert(op(*args), shared, shared_gate)


def copy_shard(param: torch.Tensor, loaded: torch.Tensor, sizes: list[int], shard: int | None,
               name: str, dim: int = 0) -> None:
    """Copy ``loaded`` into shard ``shard`` of ``param`` along ``dim`` (None: the whole tensor)."""
    if shard is None:
        target = param.data
    else:
        start = sum(sizes[:shard])
        target = param.data.narrow(dim, start, sizes[shard])
    if target.shape != loaded.shape:
        raise ValueError(f"tensor for '{name}'{'' if shard is None else f' shard {shard}'} has shape "
                         f"{tuple(loaded.shape)}, expected {tuple(target.shape)}")
    target.copy_(loaded)


class UnquantizedMethod(QuantMethod):
    def create_weights(self, layer, input_size, output_sizes, dtype):
        layer.weight = nn.Parameter(torch.empty(sum(output_sizes), input_size, dtype=dtype),
                                    requires_grad=False)

    def load_shard(self, layer, param_name, loaded, shard):
        copy_shard(getattr(layer, param_name), loaded, layer.output_sizes, shard, param_name)

    def apply(self, layer, x, bias):
        return layer.ops.linear(x, layer.weight, bias)

    def apply_gated(self, layer, x, bias, activation):
        return layer.ops.gated_linear(x, layer.weight, bias, activation)


class UnquantizedMoEMethod:
    """Stacked expert weights w13 [E, 2I, H] and w2 [E, H, I] in the model's dtype."""

    def create_weights(self, layer, num_experts, hidden, intermediate, dtype):
        layer.w13 = nn.Parameter(torch.empty(num_experts, 2 * intermediate, hidden, dtype=dtype),
                                 requires_grad=False)
        layer.w2 = nn.Parameter(torch.empty(num_experts, hidden, intermediate, dtype=dtype),
                                requires_grad=False)

    def load_expert(self, layer, param_name, loaded, expert, shard):
        """Copy one expert's shard (gate 0 / up 1 of w13, or w2); expert None: all experts."""
        if param_name not in ("w13", "w2"):
            raise ValueError(f"unexpected expert tensor '{param_name}' for unquantized experts")
        param = getattr(layer, param_name)
        if expert is not None:
            param = param[expert]
        sizes = [layer.intermediate, layer.intermediate] if param_name == "w13" else [param.shape[0]]
        copy_shard(param, loaded, sizes, shard, f"{param_name}[{expert}]")

    def process_after_loading(self, layer):
        pass

    fuses_shared_expert = True  # apply takes shared / shared_gate (FusedMoE.forward)
    folds_shared_experts = True  # the weights can hold a shared expert as more experts

    def apply(self, layer, x, router_logits, shared=None, shared_gate=None):
        return fused_moe_with_shared(layer.ops.fused_moe, x, layer.w13, layer.w2, router_logits,
                                     layer.top_k, layer.renormalize, layer.activation,
                                     shared=shared, shared_gate=shared_gate,
                                     shared_experts=getattr(layer, "shared_experts", 0))


class UnquantizedConfig(QuantConfig):
    name = "none"

    def method_for(self, prefix):
        return UnquantizedMethod()

    def moe_method_for(self, prefix):
        return UnquantizedMoEMethod()
