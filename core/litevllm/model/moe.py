"""FusedMoE: a layer of experts stored stacked, run through the ``fused_moe`` op.

The quant config's MoE method owns the weights (``w13 [E, 2I, H]``: gate then up, and
``w2 [E, H, I]`` when unquantized; a quantized method names its params ``w13_<attr>`` /
``w2_<attr>`` after the checkpoint's per-expert tensors, e.g. ``w13_qweight``). Checkpoints name one tensor per expert
(``mlp.experts.3.up_proj.weight``); ``route_expert_tensor`` sends each into its expert's slice
of the stacked parameters, so the weights are never held twice.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from litevllm.model.context import ModelContext
from litevllm.model.layers import canonical_activation
from litevllm.ops.torch_ops import add_shared_expert

# tensors already stacked over experts (transformers 5's in-memory layout)
_STACKED = {"gate_up_proj": "w13", "down_proj": "w2"}


def route_expert_tensor(module_name: str, attr: str):
    """Loader hook: ``(module, attr)`` of a checkpoint tensor -> ``(module, param, shard)``.

    ``model.layers.1.mlp.experts.3.up_proj``, ``weight`` -> ``(model.layers.1.mlp.experts, w13,
    (3, 1))``; a tensor stacked over all experts gets shard None. Anything else: None.
    """
    m = _EXPERT_TENSOR.match(module_name)
    if m:
        # ``weight`` goes to the stacked param itself; a quantized tensor (``qweight``,
        # ``scales``, ...) to ``<param>_<attr>``, which the quant method's MoE weights name
        param, shard = _SHARD[m.group(3)]
        return m.group(1), param if attr == "weight" else f"{param}_{attr}", (int(m.group(2)), shard)
    if module_name.endswith(".experts") and attr in _STACKED:
        return module_name, _STACKED[attr], None
    return None


class FusedMoE(nn.Module):
    """Top-k routed experts: ``(hidden [T, H], router_logits [T, E]) -> [T, H]``; a shared
    expert's output (``shared``, optionally gated) can be added in the same final sum."""

    # stacked parameter -> the per-expert checkpoint projections in it, in shard order
    expert_tensors = {"w13": ("gate_proj", "up_proj"), "w2": ("down_proj",)}

    def __init__(self, num_experts: int, top_k: int, hidden_size: int, intermediate_size: int,
                 ctx: ModelContext, renormalize: bool = True, activation: str = "silu",
                 prefix: str = ""):
        super().__init__()
        if not 0 < top_k <= num_experts:
            raise ValueError(f"{prefix}: top_k must be in [1, {num_experts}], got {top_k}")
        self.num_experts, self.top_k = num_experts, top_k
        self.hidden, self.intermediate = hidden_size, intermediate_size
        self.renormalize, self.activation = renormalize, canonical_activation(activation)
        self.ops = ctx.ops
        self.method = ctx.quant.moe_method_for(prefix)
        if self.method is None:
            raise ValueError(f"quantization '{ctx.quant.name}' does not support MoE layers "
                             f"({prefix})")
        self.method.create_weights(self, num_experts, hidden_size, intermediate_size, ctx.dtype)

    # loading ---------------------------------------------------------------------------------
    def expected_shards(self, attr: str, module_name: str):
        """Every (shard, checkpoint name) the loader must see for parameter ``attr``."""
        base, _, suffix = attr.partition("_")  # w13 -> .weight; w13_qweight -> .qweight
        subs = self.expert_tensors.get(base)
        if subs is None:
            yield None, f"{module_name}.{attr}"
            return
        for e in range(self.num_experts):
            for s, sub in enumerate(subs):
                yield (e, s), f"{module_name}.{e}.{sub}.{suffix or 'weight'}"

    def load_shard(self, attr: str, loaded: torch.Tensor, shard) -> None:
        expert, s = shard if shard is not None else (None, None)
        self.method.load_expert(self, attr, loaded, expert, s)

    def process_after_loading(self) -> None:
        self.method.process_after_loading(self)

    # -----------------------------------------------------------------------------------------
    def forward(self, hidden: torch.Tensor, router_logits: torch.Tensor,
                shared: torch.Tensor | None = None,
                shared_gate: torch.Tensor | None = None) -> torch.Tensor:
        """``shared`` [T, H]: a shared expert's output, added (gated by ``sigmoid(shared_gate
        [T, 1])`` when given) inside the op's final sum where the method fuses it."""
        if shared is None:
            if shared_gate is not None:
                raise ValueError("shared_gate needs shared (the shared expert's output)")
            return self.method.apply(self, hidden, router_logits)
        if getattr(self.method, "fuses_shared_expert", False):
            return self.method.apply(self, hidden, router_logits, shared, shared_gate)
        return add_shared_expert(self.method.apply(self, hidden, router_logits), shared,
                                 shared_gate)

    def extra_repr(self) -> str:
        return (f"experts={self.num_experts}, top_k={self.top_k}, hidden={self.hidden}, "
                f"intermediate={self.intermediate}, renormalize={self.renormalize}")


# checkpoint module name of one expert's projection -> (stacked param, shard within it): the
# names FusedMoE loads (HF Qwen/DeepSeek), plus Mixtral's w1/w3/w2
_SHARD = {sub: (param, i) for param, subs in FusedMoE.expert_tensors.items()
          for i, sub in enumerate(subs)} | {"w1": ("w13", 0), "w3": ("w13", 1), "w2": ("w2", 0)}
_EXPERT_TENSOR = re.compile(rf"^(.*\.experts)\.(\d+)\.({'|'.join(_SHARD)})$")
