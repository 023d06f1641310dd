"""GGUF blocks → ``PackedWeight`` (litevllm-plugin-gptq's packed-integer layout), losslessly.

Every block type decodes to integer codes with per-group floats (``dequant.Codes``), which map
onto the layout exactly: Q4_0 → 4 bits symmetric, Q4_1 / Q4_K → 4 bits with a bias, Q8_0 / Q5_0 /
Q6_K → 8 bits symmetric (codes shifted to centre on 128), Q5_1 / Q5_K → 8 bits with a bias. GGUF
stores ``[N, K]`` rows with blocks along K; the layout wants ``[K, N]``, so codes are transposed.

A fused layer (qkv, gate_up) whose shards differ in type (Q4_K_M files keep V in Q6_K) gets one
layout for all: the widest bits, the smallest group (scales repeated) and, if any shard has a
bias, explicit biases for all (``-offset * scale``: exact, as every code times its scale fits
float32's 24-bit mantissa). Scales and biases are stored in fp16 when that is exact, else float32.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from litevllm_gptq.layout import PackedWeight, pack_rows

from .dequant import Codes, GGUFBlocks, decode_codes


def to_part(blocks: GGUFBlocks) -> Codes:
    """One shard's ``Codes`` transposed to the layout's ``[K, n]`` codes and ``[K // group, n]``
    scales / bias."""
    rows, cols = blocks.shape
    c = decode_codes(blocks.raw, blocks.ggml_type)
    bias = None if c.bias is None else c.bias.reshape(rows, -1).t()
    return replace(c, codes=c.codes.reshape(rows, cols).t(), scales=c.scales.reshape(rows, -1).t(),
                   bias=bias)


def _compact(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """The tensors in fp16 when every value survives the round trip, else as they are."""
    halves = [t if t is None else t.half() for t in tensors]
    exact = all(t is None or torch.equal(h.float(), t) for t, h in zip(tensors, halves))
    return halves if exact else list(tensors)


def pack(parts: list[Codes]) -> PackedWeight:
    """Shards stacked on N (output) into one ``PackedWeight``."""
    bits = 4 if all(p.bits <= 4 for p in parts) else 8
    group = min(p.group for p in parts)
    symmetric = all(p.bias is None for p in parts)
    codes, scales, biases = [], [], []
    for p in parts:
        repeat = p.group // group
        scales.append(p.scales.repeat_interleave(repeat, dim=0))
        if symmetric:  # w = (q - offset) * s = (q + 2**(bits-1) - offset - 2**(bits-1)) * s
            codes.append(p.codes.int() + (2 ** (bits - 1) - p.offset))
            continue
        codes.append(p.codes)
        bias = -p.offset * p.scales if p.bias is None else p.bias - p.offset * p.scales
        biases.append(bias.repeat_interleave(repeat, dim=0))
    scale, bias = _compact(torch.cat(scales, dim=1), None if symmetric else torch.cat(biases, dim=1))
    return PackedWeight(pack_rows(torch.cat(codes, dim=1), bits), scale, bias, bits, group)
