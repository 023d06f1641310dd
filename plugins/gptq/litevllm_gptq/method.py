"""What every packed-int scheme shares: skipped modules, shard copies, installing the
``PackedWeight`` on the layer after loading, and the matmul through ``packed_linear``."""
from __future__ import annotations

import torch
from torch import nn

from litevllm.plugin_api import QuantMethod, copy_shard
from litevllm_gptq.layout import PackedWeight
from litevllm_gptq.linear import packed_linear

# fused LiteLinear name -> the checkpoint projections inside it
_FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def is_skipped(prefix: str, skip: list[str]) -> bool:
    """True when ``prefix`` (or a projection fused into it) is in ``modules_to_not_convert``."""
    parent, _, leaf = prefix.rpartition(".")
    names = [prefix] + [f"{parent}.{sub}" for sub in _FUSED.get(leaf, ())]
    return any(s and (n == s or n.endswith("." + s) or s in n.split(".") or n.startswith(s + "."))
               for s in skip for n in names)


def check_checkpoint(name: str, q: dict) -> None:
    """One-line errors when a ``name`` scheme is asked for on a checkpoint without its
    ``quantization_config`` or with another ``quant_method``."""
    if not q:
        raise ValueError(f"quantization '{name}' needs a checkpoint quantized with it (its "
                         "config.json has no quantization_config); for online weight-only "
                         "quantization use 'int8'")
    if q.get("quant_method", name) != name:
        raise ValueError(f"quantization '{name}' was asked for, but the checkpoint is "
                         f"'{q.get('quant_method')}'-quantized")


def group_size_of(group_size: int, k: int, prefix: str) -> int:
    g = k if group_size in (-1, 0, None) else int(group_size)
    if g <= 0 or k % g:
        raise ValueError(f"{prefix}: group_size={group_size} does not divide the input size {k}")
    return g


def int_param(*shape) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, dtype=torch.int32), requires_grad=False)


def float_param(*shape, dtype) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, dtype=dtype), requires_grad=False)


def scale_dtype(dtype: torch.dtype) -> torch.dtype:
    """Scales stay float16 (the checkpoints' dtype) under 16-bit activations, float32 otherwise."""
    return torch.float32 if dtype == torch.float32 else torch.float16


def copy_cols(layer, name: str, loaded: torch.Tensor, shard, per: int = 1, rows: int | None = None,
              what: str = "") -> None:
    """Copy a tensor sharded on dim 1 (N, or N // per when packed along N)."""
    param = getattr(layer, name)
    if rows is not None and loaded.dim() == 2 and loaded.shape[0] != rows:
        raise ValueError(f"'{layer.prefix}.{name}' has {loaded.shape[0]} rows, expected {rows} "
                         f"({what})")
    if loaded.dtype != param.dtype and not (loaded.is_floating_point() and param.is_floating_point()):
        raise ValueError(f"'{layer.prefix}.{name}' has dtype {loaded.dtype}, expected {param.dtype}")
    sizes = [n // per for n in layer.output_sizes]
    copy_shard(param, loaded, sizes, shard, f"{layer.prefix}.{name}", dim=1)


def install(layer: nn.Module, w: PackedWeight, drop: tuple[str, ...]) -> None:
    """Replace the checkpoint-shaped tensors by the packed layout (as buffers)."""
    for name in drop:
        if hasattr(layer, name):
            delattr(layer, name)
    layer.register_buffer("packed_qweight", w.qweight, persistent=False)
    layer.register_buffer("packed_scales", w.scales, persistent=False)
    layer.register_buffer("packed_bias", w.bias, persistent=False)
    layer.register_buffer("packed_perm", w.perm, persistent=False)
    layer.packed = w


class PackedMethod(QuantMethod):
    """Base: subclasses create and load the checkpoint tensors and build the ``PackedWeight``."""

    drop: tuple[str, ...] = ()

    def apply(self, layer, x, bias):
        return packed_linear(x, layer.packed, bias)

    def process_after_loading(self, layer):
        install(layer, self.pack(layer), self.drop)

    def pack(self, layer) -> PackedWeight:
        raise NotImplementedError

    def unexpected(self, layer, param_name):
        return ValueError(f"unexpected tensor '{layer.prefix}.{param_name}' for a {self.scheme} "
                          f"layer (not quantized in the checkpoint? see modules_to_not_convert)")
