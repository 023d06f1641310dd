"""``quant_method: gptq``: AutoGPTQ / GPTQModel checkpoints (4 or 8 bits), repacked at load.

On disk, for ``W [K, N]`` with ``p = 32 // bits`` codes per int32:
``qweight`` int32 ``[K / p, N]`` (packed along K), ``qzeros`` int32 ``[K / G, N / p]`` (packed
along N), ``scales`` float16 ``[K / G, N]``, optional ``g_idx`` int32 ``[K]`` (the group of each
input row; with ``desc_act`` it is not sorted). ``w = (q - z) * s`` where ``checkpoint_format``
``gptq`` stores ``z - 1`` and ``gptq_v2`` stores ``z``.
"""
from __future__ import annotations

import torch

from litevllm.plugin_api import QuantConfig, UnquantizedMethod
from litevllm_gptq.layout import PackedWeight, pack_rows, unpack_rows
from litevllm_gptq.method import (PackedMethod, check_checkpoint, copy_cols, float_param,
                                  group_size_of, int_param, is_skipped, scale_dtype)


def unpack_cols(packed: torch.Tensor, bits: int, order: tuple[int, ...] | None = None) -> torch.Tensor:
    """int32 ``[R, N / p]`` packed along N -> int32 codes ``[R, N]``; ``order[i]`` is the column
    (within each int32) held in slot ``i`` (GPTQ: sequential; AWQ: 0,2,4,6,1,3,5,7)."""
    shifts = torch.arange(0, 32, bits, device=packed.device, dtype=torch.int32)
    codes = (packed.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)  # [R, N/p, slot]
    if order is not None:
        codes = codes[..., torch.tensor(order, device=packed.device).argsort()]
    return codes.reshape(packed.shape[0], -1)


def zero_bias(zeros: torch.Tensor, scales: torch.Tensor, bits: int) -> torch.Tensor | None:
    """``bias = -z * s``, or None when every zero is the midpoint (symmetric)."""
    if bool((zeros == 2 ** (bits - 1)).all()):
        return None
    return (-zeros.float() * scales.float()).to(scales.dtype)


def group_perm(g_idx: torch.Tensor, groups: int, group_size: int, name: str):
    """The row order that makes groups contiguous (None when they already are)."""
    g_idx = g_idx.to(torch.int64)
    if g_idx.numel() and (g_idx.min() < 0 or g_idx.max() >= groups):
        raise ValueError(f"'{name}' has group indices outside [0, {groups})")
    perm = torch.argsort(g_idx, stable=True)
    want = torch.arange(g_idx.numel(), device=g_idx.device) // group_size
    if not torch.equal(g_idx[perm], want):
        raise ValueError(f"'{name}' does not put exactly group_size={group_size} rows in each group")
    return None if torch.equal(perm, torch.arange(g_idx.numel(), device=perm.device)) else perm


# MoE router gates: GPTQ tools never quantize them (tiny N), so they stay dense
ROUTER_GATES = ("gate", "shared_expert_gate")


class GPTQMethod(PackedMethod):
    scheme = "gptq"
    drop = ("qweight", "qzeros", "scales", "g_idx")

    def __init__(self, config: "GPTQConfig"):
        self.config = config

    def create_weights(self, layer, input_size, output_sizes, dtype):
        bits, p = self.config.bits, 32 // self.config.bits
        k, n = input_size, sum(output_sizes)
        g = layer.group_size = group_size_of(self.config.group_size, k, layer.prefix)
        if k % p or any(s % p for s in output_sizes):
            raise ValueError(f"{layer.prefix}: sizes {k}x{output_sizes} are not multiples of {p} "
                             f"(the {bits}-bit codes per int32)")
        layer.qweight = int_param(k // p, n)
        layer.qzeros = int_param(k // g, n // p)
        layer.scales = float_param(k // g, n, dtype=scale_dtype(dtype))
        layer.g_idx = None  # optional: identity when absent

    def load_shard(self, layer, param_name, loaded, shard):
        k, g, p = layer.input_size, layer.group_size, 32 // self.config.bits
        groups = f"group_size={self.config.group_size} with input size {k}"
        if param_name == "qweight":
            copy_cols(layer, param_name, loaded, shard, rows=k // p, what=f"{self.config.bits}-bit codes "
                      f"packed along the input size {k}")
        elif param_name in ("qzeros", "scales"):
            copy_cols(layer, param_name, loaded, shard, per=p if param_name == "qzeros" else 1,
                      rows=k // g, what=groups)
        elif param_name == "g_idx":
            if loaded.shape != (k,):
                raise ValueError(f"'{layer.prefix}.g_idx' has shape {tuple(loaded.shape)}, "
                                 f"expected ({k},)")
            g_idx = loaded.to(device=layer.qweight.device, dtype=torch.int32)
            if layer.g_idx is not None and not torch.equal(layer.g_idx, g_idx):
                raise ValueError(f"'{layer.prefix}.g_idx' differs between the fused shards "
                                 f"{layer.output_sizes}")
            layer.g_idx = g_idx
        else:
            raise self.unexpected(layer, param_name)

    def pack(self, layer) -> PackedWeight:
        bits, g = self.config.bits, layer.group_size
        zeros = unpack_cols(layer.qzeros.data, bits)
        if self.config.checkpoint_format == "gptq":
            zeros = zeros + 1
        scales = layer.scales.data
        qweight, perm = layer.qweight.data, None
        if layer.g_idx is not None:
            perm = group_perm(layer.g_idx, scales.shape[0], g, f"{layer.prefix}.g_idx")
            if perm is not None:
                qweight = pack_rows(unpack_rows(qweight, bits)[perm], bits)
        return PackedWeight(qweight.contiguous(), scales, zero_bias(zeros, scales, bits), bits, g,
                            perm)


class GPTQConfig(QuantConfig):
    name = "gptq"
    formats = ("gptq", "gptq_v2")

    def __init__(self, bits=4, group_size=128, desc_act=False, sym=True, checkpoint_format="gptq",
                 skip=()):
        if bits not in (4, 8):
            raise ValueError(f"gptq: bits={bits} is not supported (4 or 8)")
        if checkpoint_format not in self.formats:
            raise ValueError(f"gptq: checkpoint_format '{checkpoint_format}' is not supported "
                             f"({' or '.join(self.formats)})")
        if group_size not in (-1, 0, None) and (not isinstance(group_size, int) or group_size < 1):
            raise ValueError(f"gptq: group_size={group_size!r} is not a positive int or -1")
        self.bits, self.group_size, self.desc_act, self.sym = bits, group_size, desc_act, sym
        self.checkpoint_format, self.skip = checkpoint_format, list(skip)

    @classmethod
    def from_hf(cls, q: dict) -> "GPTQConfig":
        check_checkpoint("gptq", q)
        fmt = q.get("checkpoint_format") or q.get("format") or "gptq"
        return cls(bits=q.get("bits", 4), group_size=q.get("group_size", 128),
                   desc_act=q.get("desc_act", False), sym=q.get("sym", True), checkpoint_format=fmt,
                   skip=q.get("modules_to_not_convert") or [])

    def method_for(self, prefix):
        dense = is_skipped(prefix, self.skip) or prefix.rpartition(".")[2] in ROUTER_GATES
        return UnquantizedMethod() if dense else GPTQMethod(self)

    def moe_method_for(self, prefix):
        from litevllm_gptq.moe import PackedMoEMethod
        return PackedMoEMethod(self, prefix)
