"""``quant_method: awq`` (GEMM packing), repacked at load.

On disk, for ``W [K, N]``: ``qweight`` int32 ``[K, N / 8]`` and ``qzeros`` int32 ``[K / G, N / 8]``
packed along N with slot ``i`` of each int32 holding column ``AWQ_ORDER[i]`` of its 8;
``scales`` float16 ``[K / G, N]``; ``w = (q - z) * s`` (``zero_point: false``: z = 8).
"""
from __future__ import annotations


from litevllm.plugin_api import QuantConfig, UnquantizedMethod
from litevllm_gptq.gptq import unpack_cols, zero_bias
from litevllm_gptq.layout import PackedWeight, pack_rows
from litevllm_gptq.method import (PackedMethod, check_checkpoint, copy_cols, float_param,
                                  group_size_of, int_param, is_skipped, scale_dtype)

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


class AWQMethod(PackedMethod):
    scheme = "awq"
    drop = ("qweight", "qzeros", "scales")

    def __init__(self, config: "AWQConfig"):
        self.config = config

    def create_weights(self, layer, input_size, output_sizes, dtype):
        k, n = input_size, sum(output_sizes)
        g = layer.group_size = group_size_of(self.config.group_size, k, layer.prefix)
        if k % 8 or any(s % 8 for s in output_sizes):
            raise ValueError(f"{layer.prefix}: sizes {k}x{output_sizes} are not multiples of 8")
        layer.qweight = int_param(k, n // 8)
        layer.qzeros = int_param(k // g, n // 8) if self.config.zero_point else None
        layer.scales = float_param(k // g, n, dtype=scale_dtype(dtype))

    def load_shard(self, layer, param_name, loaded, shard):
        k, g = layer.input_size, layer.group_size
        groups = f"group_size={self.config.group_size} with input size {k}"
        if param_name == "qweight":
            copy_cols(layer, param_name, loaded, shard, per=8, rows=k, what=f"input size {k}")
        elif param_name == "scales" or (param_name == "qzeros" and self.config.zero_point):
            copy_cols(layer, param_name, loaded, shard, per=8 if param_name == "qzeros" else 1,
                      rows=k // g, what=groups)
        else:
            raise self.unexpected(layer, param_name)

    def pack(self, layer) -> PackedWeight:
        codes = unpack_cols(layer.qweight.data, 4, AWQ_ORDER)
        scales = layer.scales.data
        bias = None
        if self.config.zero_point:
            bias = zero_bias(unpack_cols(layer.qzeros.data, 4, AWQ_ORDER), scales, 4)
        return PackedWeight(pack_rows(codes, 4), scales, bias, 4, layer.group_size)


class AWQConfig(QuantConfig):
    name = "awq"

    def __init__(self, group_size=128, zero_point=True, skip=()):
        if not isinstance(group_size, int) or (group_size < 1 and group_size != -1):
            raise ValueError(f"awq: group_size={group_size!r} is not a positive int or -1")
        self.group_size, self.zero_point, self.skip = group_size, zero_point, list(skip)

    @classmethod
    def from_hf(cls, q: dict) -> "AWQConfig":
        check_checkpoint("awq", q)
        bits = q.get("bits", q.get("w_bit", 4))
        if bits != 4:
            raise ValueError(f"awq: bits={bits} is not supported (4)")
        version = str(q.get("version", "gemm")).lower()
        if version != "gemm":
            raise ValueError(f"awq: version '{version}' is not supported (gemm packing only)")
        return cls(group_size=q.get("group_size", q.get("q_group_size", 128)),
                   zero_point=q.get("zero_point", True),
                   skip=q.get("modules_to_not_convert") or [])

    def method_for(self, prefix):
        return UnquantizedMethod() if is_skipped(prefix, self.skip) else AWQMethod(self)
