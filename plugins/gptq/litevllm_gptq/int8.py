"""Online ``quantization="int8"``: weight-only, per-output-channel symmetric W8A16 from a float
checkpoint. Weights load like unquantized ones and are quantized layer by layer afterwards."""
from __future__ import annotations

import torch

from litevllm.plugin_api import QuantConfig, UnquantizedMethod
from litevllm_gptq.layout import PackedWeight, pack_rows
from litevllm_gptq.method import PackedMethod, scale_dtype


def quantize_int8(weight: torch.Tensor) -> PackedWeight:
    """``weight [N, K]`` (nn.Linear layout) -> per-channel symmetric 8-bit ``PackedWeight``."""
    w = weight.float()
    scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)  # [N]
    codes = torch.clamp(torch.round(w / scales[:, None]), -127, 127).to(torch.int32) + 128
    k = w.shape[1]
    return PackedWeight(pack_rows(codes.t(), 8), scales[None, :].to(scale_dtype(weight.dtype)),
                        None, 8, k)


class Int8Method(PackedMethod):
    scheme = "int8"
    drop = ("weight",)

    def __init__(self):
        self.dense = UnquantizedMethod()

    def create_weights(self, layer, input_size, output_sizes, dtype):
        if input_size % 4:
            raise ValueError(f"{layer.prefix}: input size {input_size} is not a multiple of 4")
        self.dense.create_weights(layer, input_size, output_sizes, dtype)

    def load_shard(self, layer, param_name, loaded, shard):
        self.dense.load_shard(layer, param_name, loaded, shard)

    def pack(self, layer) -> PackedWeight:
        return quantize_int8(layer.weight.data)


class Int8Config(QuantConfig):
    name = "int8"

    @classmethod
    def from_hf(cls, q: dict) -> "Int8Config":
        if q and q.get("quant_method") not in (None, "int8"):
            raise ValueError(f"quantization 'int8' quantizes a float checkpoint online, but this "
                             f"checkpoint is already '{q.get('quant_method')}'-quantized")
        return cls()

    def method_for(self, prefix):
        return Int8Method()
