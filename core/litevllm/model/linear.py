"""One linear layer for every quantization scheme, with fused output shards (qkv, gate_up)."""
from __future__ import annotations

import torch
from torch import nn

from litevllm.model.context import ModelContext


class LiteLinear(nn.Module):
    """``y = x W^T + b`` where W may be several checkpoint tensors stacked on the output dim.

    ``output_sizes`` lists the shards (e.g. ``[q, k, v]``); the loader passes a shard index for
    each checkpoint tensor, or None for a tensor that is already fused.
    """

    def __init__(self, input_size: int, output_sizes: int | list[int], ctx: ModelContext,
                 bias: bool = False, prefix: str = ""):
        super().__init__()
        self.input_size = input_size
        self.output_sizes = [output_sizes] if isinstance(output_sizes, int) else list(output_sizes)
        self.prefix, self.ops = prefix, ctx.ops
        self.method = ctx.quant.method_for(prefix)
        self.method.create_weights(self, input_size, self.output_sizes, ctx.dtype)
        self.bias = nn.Parameter(torch.zeros(sum(self.output_sizes), dtype=ctx.dtype),
                                 requires_grad=False) if bias else None

    def load_shard(self, param_name: str, loaded: torch.Tensor, shard: int | None) -> None:
        if param_name == "bias":
            from litevllm.quant.unquantized import copy_shard
            copy_shard(self.bias, loaded, self.output_sizes, shard, f"{self.prefix}.bias")
        else:
            self.method.load_shard(self, param_name, loaded, shard)

    def process_after_loading(self) -> None:
        self.method.process_after_loading(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.apply(self, x, self.bias)

    def forward_gated(self, x: torch.Tensor, activation: str) -> torch.Tensor:
        """``<activation>_and_mul(forward(x))`` for stacked gate/up shards (one fused op where
        the quantization method has it)."""
        return self.method.apply_gated(self, x, self.bias, activation)

    def extra_repr(self) -> str:
        return f"in={self.input_size}, out={self.output_sizes}, bias={self.bias is not None}"
