"""The ``gguf`` quantization scheme, which every GGUF checkpoint's config names.

Linear layers receive their GGUF blocks as stored (``GGUFBlocks``). On CUDA each layer is repacked
losslessly into a ``PackedWeight`` and runs through ``litevllm_gptq.packed_linear``; on the CPU,
for types without a packed form (F16, F32, BF16) and for tensors that arrive as values (routers),
the layer is dequantized to the model's dtype, as it always was. ``LITEVLLM_GGUF_PACKED=1`` keeps
blocks packed on every device (the CPU then runs the torch reference; for tests and debugging).
Embeddings, norms, lm_head and MoE experts arrive dequantized and load as unquantized weights.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from litevllm_gptq.layout import PackedWeight
from litevllm_gptq.linear import packed_linear
from torch import nn

from litevllm.plugin_api import QuantConfig, QuantMethod, UnquantizedMoEMethod

from .dequant import GGUFBlocks, is_block_type
from .repack import pack, to_part

PACKED_ENV = "LITEVLLM_GGUF_PACKED"


class GGUFLinearMethod(QuantMethod):
    def __init__(self, packed: bool | None):
        self.packed = packed  # None: on CUDA only

    def create_weights(self, layer, input_size, output_sizes, dtype):
        # a placeholder on the model's device: the real weight is built once every shard is in
        layer.weight = nn.Parameter(torch.empty(0, dtype=dtype), requires_grad=False)
        layer.gguf_shards = {}
        layer.packed_bits = None  # set when the layer is kept packed

    def load_shard(self, layer, param_name, loaded, shard):
        if param_name != "weight":
            raise ValueError(f"GGUF linear layers have no parameter '{param_name}'")
        rows = sum(layer.output_sizes) if shard is None else layer.output_sizes[shard]
        if tuple(loaded.shape) != (rows, layer.input_size):
            raise ValueError(f"tensor for '{layer.prefix}.weight'{'' if shard is None else f' shard {shard}'} "
                             f"has shape {tuple(loaded.shape)}, expected {(rows, layer.input_size)}")
        shards = getattr(layer, "gguf_shards", None)
        if shards is None or shard in shards:
            raise ValueError(f"tensor for '{layer.prefix}.weight' was given twice")
        shards[shard] = loaded.to(layer.weight.device)  # raw bytes: the quantized size
        if None in shards or len(shards) == len(layer.output_sizes):
            self.process_after_loading(layer)  # now, so raw blocks never pile up on the GPU

    def process_after_loading(self, layer):
        if not hasattr(layer, "gguf_shards"):
            return  # built when its last shard arrived
        shards, dtype, device = layer.gguf_shards, layer.weight.dtype, layer.weight.device
        del layer.gguf_shards
        if not shards:  # load_format="dummy": nothing was loaded
            layer.weight = nn.Parameter(torch.zeros(sum(layer.output_sizes), layer.input_size, dtype=dtype,
                                                    device=device), requires_grad=False)
            return
        # an output shard no tensor filled (a model's padding rows) is zeros
        items = [shards[None]] if None in shards else [
            shards[i] if i in shards else torch.zeros(n, layer.input_size, dtype=dtype, device=device)
            for i, n in enumerate(layer.output_sizes)]
        packed = device.type == "cuda" if self.packed is None else self.packed
        if packed and all(isinstance(t, GGUFBlocks) and is_block_type(t.ggml_type) for t in items):
            w = pack([to_part(t) for t in items])
            del layer.weight
            for name in ("qweight", "scales", "bias"):  # Parameters, so weight-byte counts see them
                value = getattr(w, name)
                setattr(layer, f"packed_{name}", value if value is None else nn.Parameter(value, requires_grad=False))
            layer.packed_bits, layer.packed_group = w.bits, w.group_size
            return
        values = [t.dequantize(dtype) if isinstance(t, GGUFBlocks) else t.to(dtype) for t in items]
        layer.weight = nn.Parameter(torch.cat(values), requires_grad=False)  # a copy, not a file view

    def apply(self, layer, x, bias):
        if layer.packed_bits is None:
            return F.linear(x, layer.weight, bias)
        w = PackedWeight(layer.packed_qweight, layer.packed_scales, layer.packed_bias,
                         layer.packed_bits, layer.packed_group)
        return packed_linear(x, w, bias)


class GGUFQuantConfig(QuantConfig):
    name = "gguf"

    def __init__(self, packed: bool | None = None):
        self.packed = packed

    @classmethod
    def from_hf(cls, quant_config):
        return cls(packed=True if os.environ.get(PACKED_ENV) == "1" else None)

    def method_for(self, prefix):
        return GGUFLinearMethod(self.packed)

    def moe_method_for(self, prefix):
        return UnquantizedMoEMethod()
