"""The quantization contract: a config picks a method per layer; the method owns the weights."""
from __future__ import annotations

import torch
from torch import nn


class QuantMethod:
    """Creates a layer's weights, loads checkpoint shards into them, and runs the matmul."""

    def create_weights(self, layer: nn.Module, input_size: int, output_sizes: list[int],
                       dtype: torch.dtype) -> None:
        raise NotImplementedError

    def load_shard(self, layer: nn.Module, param_name: str, loaded: torch.Tensor,
                   shard: int | None) -> None:
        """Copy ``loaded`` into ``param_name``; ``shard`` indexes ``output_sizes`` (None: all)."""
        raise NotImplementedError

    def process_after_loading(self, layer: nn.Module) -> None:
        """Repack weights once every shard is loaded (transpose, pack, compute scales)."""

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def apply_gated(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None,
                    activation: str) -> torch.Tensor:
        """``<activation>_and_mul(apply(...))`` for a gate/up layer; a method may fuse the two."""
        return getattr(layer.ops, f"{activation}_and_mul")(self.apply(layer, x, bias))


class QuantConfig:
    """Subclass per scheme and register it through ``register_quant_methods``."""

    name = "base"

    @classmethod
    def from_hf(cls, quant_config: dict) -> "QuantConfig":
        """Build from a checkpoint's ``quantization_config``."""
        return cls()

    def method_for(self, prefix: str) -> QuantMethod:
        """The method for the linear layer at ``prefix`` (e.g. ``model.layers.0.mlp.down_proj``)."""
        raise NotImplementedError

    def moe_method_for(self, prefix: str):
        """The method for a fused-MoE layer; None when the scheme does not support MoE. It has
        ``create_weights``, ``load_expert``, ``process_after_loading`` and ``apply(layer, x,
        router_logits)``; with ``fuses_shared_expert = True`` its ``apply`` also takes
        ``shared=None, shared_gate=None`` (``FusedMoE.forward``), else the core adds them.
        ``folds_shared_experts = True``: its weights can hold a shared expert as more experts
        (``shared_expert_slots``), and ``apply`` passes ``layer.shared_experts`` to the op."""
        return None
