"""FusedMoE: a layer of experts stored stacked, run through the ``fused_moe`` op.

The quant config's MoE method owns the weights (``w13 [E, 2I, H]``: gate then up, and
``w2 [E, H, I]`` when unquantized; a quantized method names its params ``w13_<attr>`` /
``w2_<attr>`` after the checkpoint's per-expert tensors, e.g. ``w13_qweight``). Checkpoints name one tensor per expert
(``mlp.experts.3.up_proj.weight``); ``route_expert_tensor`` sends each into its expert's slice
of the stacked parameters, so the weights are never held twice.

A shared expert (one every token takes, as Qwen2-MoE's) whose width is a multiple of the
experts' can be folded in as S more experts (``shared_expert_slots``): its gate/up rows and
down columns are split into S slices after the routed experts, and the same grouped GEMMs run
it, so a decode step launches no separate MLP for it.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from litevllm.kinds import op_takes
from litevllm.model.context import ModelContext
from litevllm.model.layers import canonical_activation
from litevllm.ops.torch_ops import add_shared_expert
from litevllm.quant.unquantized import UnquantizedMethod

# tensors already stacked over experts (transformers 5's in-memory layout)
_STACKED = {"gate_up_proj": "w13", "down_proj": "w2"}
SHARED = "shared"  # shard tag of a folded shared expert's tensors: (SHARED, 0 gate / 1 up / 0 down)


def shared_expert_slots(ctx: ModelContext, prefix: str, shared_size: int, intermediate: int,
                        shared_prefix: str) -> int:
    """How many experts a shared expert of width ``shared_size`` (module ``shared_prefix``)
    folds into at the FusedMoE ``prefix``, or 0 (it stays a separate MLP): the width must be a
    multiple of ``intermediate``, the scheme keep the shared expert's linears unquantized and
    its MoE method declare ``folds_shared_experts``, and the ``fused_moe`` op take
    ``shared_experts``."""
    if not (shared_size and shared_size % intermediate == 0
            and getattr(ctx.quant.moe_method_for(prefix), "folds_shared_experts", False)
            and type(ctx.quant.method_for(f"{shared_prefix}.gate_up_proj")) is UnquantizedMethod
            and op_takes(ctx.ops.fused_moe, "shared_experts")):
        return 0
    return shared_size // intermediate


def route_expert_tensor(module_name: str, attr: str, folded: dict[str, str] | None = None):
    """Loader hook: ``(module, attr)`` of a checkpoint tensor -> ``(module, param, shard)``.

    ``model.layers.1.mlp.experts.3.up_proj``, ``weight`` -> ``(model.layers.1.mlp.experts, w13,
    (3, 1))``; a tensor stacked over all experts gets shard None. ``folded`` maps a folded
    shared expert's module name to its FusedMoE's: ``...mlp.shared_expert.up_proj`` ->
    ``(...mlp.experts, w13, ("shared", 1))``. Anything else: None.
    """
    parent, _, leaf = module_name.rpartition(".")
    if folded and parent in folded and leaf in _SHARD:
        param, shard = _SHARD[leaf]
        return folded[parent], param if attr == "weight" else f"{param}_{attr}", (SHARED, shard)
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
    shared_experts, shared_prefix = 0, ""  # a shared expert folded in (__init__)

    def __init__(self, num_experts: int, top_k: int, hidden_size: int, intermediate_size: int,
                 ctx: ModelContext, renormalize: bool = True, activation: str = "silu",
                 prefix: str = "", shared_experts: int = 0, shared_prefix: str = ""):
        """``shared_experts`` S (``shared_expert_slots``): a shared expert, checkpoint module
        ``shared_prefix``, folded in as S more experts; ``forward``'s router logits then end
        with its gate column (or not, for an ungated one)."""
        super().__init__()
        if not 0 < top_k <= num_experts:
            raise ValueError(f"{prefix}: top_k must be in [1, {num_experts}], got {top_k}")
        if shared_experts < 0 or (shared_experts and not shared_prefix):
            raise ValueError(f"{prefix}: shared_experts must be >= 0, with the shared expert's "
                             f"shared_prefix, got {shared_experts!r}, {shared_prefix!r}")
        self.num_experts, self.top_k = num_experts, top_k
        self.shared_experts, self.shared_prefix = shared_experts, shared_prefix
        self.hidden, self.intermediate = hidden_size, intermediate_size
        self.renormalize, self.activation = renormalize, canonical_activation(activation)
        self.ops = ctx.ops
        self.method = ctx.quant.moe_method_for(prefix)
        if self.method is None:
            raise ValueError(f"quantization '{ctx.quant.name}' does not support MoE layers "
                             f"({prefix})")
        if shared_experts and not getattr(self.method, "folds_shared_experts", False):
            raise ValueError(f"{prefix}: quantization '{ctx.quant.name}' cannot fold a shared "
                             f"expert into its experts (see shared_expert_slots)")
        self.method.create_weights(self, num_experts + shared_experts, hidden_size,
                                   intermediate_size, ctx.dtype)

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
        if self.shared_experts:
            for s, sub in enumerate(subs):
                yield (SHARED, s), f"{self.shared_prefix}.{sub}.{suffix or 'weight'}"

    def load_shard(self, attr: str, loaded: torch.Tensor, shard) -> None:
        expert, s = shard if shard is not None else (None, None)
        if expert == SHARED:  # gate/up rows or down columns: one slice per folded expert
            n, dim = self.shared_experts, 0 if attr.startswith("w13") else 1
            if loaded.shape[dim] != n * self.intermediate:
                raise ValueError(f"shared expert tensor has shape {tuple(loaded.shape)}, expected "
                                 f"{n * self.intermediate} along dim {dim}")
            for i, part in enumerate(loaded.chunk(n, dim)):
                self.method.load_expert(self, attr, part, self.num_experts + i, s)
            return
        if expert is None and self.shared_experts:  # stacked over the routed experts only
            if loaded.shape[0] != self.num_experts:
                raise ValueError(f"stacked expert tensor has shape {tuple(loaded.shape)}, "
                                 f"expected {self.num_experts} experts first")
            for e in range(self.num_experts):
                self.method.load_expert(self, attr, loaded[e], e, None)
            return
        self.method.load_expert(self, attr, loaded, expert, s)

    def whole_tensor_fills(self, shard) -> bool:
        """Whether a tensor stacked over all experts (shard None) fills ``shard``: a folded
        shared expert's slices come from their own tensors."""
        return not (isinstance(shard, tuple) and shard[0] == SHARED)

    def process_after_loading(self) -> None:
        self.method.process_after_loading(self)

    # -----------------------------------------------------------------------------------------
    def forward(self, hidden: torch.Tensor, router_logits: torch.Tensor,
                shared: torch.Tensor | None = None,
                shared_gate: torch.Tensor | None = None) -> torch.Tensor:
        """``shared`` [T, H]: a shared expert's output, added (gated by ``sigmoid(shared_gate
        [T, 1])`` when given) inside the op's final sum where the method fuses it. With folded
        shared experts, ``router_logits`` is [T, E] or [T, E + 1] (their gate logit last)."""
        if self.shared_experts and (shared is not None or shared_gate is not None):
            raise ValueError("this layer's shared expert is folded into its experts")
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
                f"intermediate={self.intermediate}, renormalize={self.renormalize}"
                + (f", shared_experts={self.shared_experts}" if self.shared_experts else ""))


# checkpoint module name of one expert's projection -> (stacked param, shard within it): the
# names FusedMoE loads (HF Qwen/DeepSeek), plus Mixtral's w1/w3/w2
_SHARD = {sub: (param, i) for param, subs in FusedMoE.expert_tensors.items()
          for i, sub in enumerate(subs)} | {"w1": ("w13", 0), "w3": ("w13", 1), "w2": ("w2", 0)}
_EXPERT_TENSOR = re.compile(rf"^(.*\.experts)\.(\d+)\.({'|'.join(_SHARD)})$")
