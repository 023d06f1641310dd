"""The ``triton`` attention backend: paged KV cache, chunked prefill and split-KV decoding."""
from __future__ import annotations

import torch

from litevllm.plugin_api import AttentionBackend, AttentionMetadata, AttentionSpec, torch_ops
from litevllm_triton.kernels._common import device_name, fp8_supported
from litevllm_triton.kernels.decode_attention import decode_attention, decode_order
from litevllm_triton.kernels.prefill_attention import prefill_attention
from litevllm_triton.kernels.reshape_and_cache import reshape_and_cache


class TritonAttentionBackend(AttentionBackend):
    """Cache layout [2, num_blocks, block_size, Hkv, D] (the default).

    Decode steps (one query per sequence) run the split-KV decode kernel, which has a
    shape-only launch configuration and never synchronises with the host, so it can be captured
    in a CUDA graph; its scratch partials are plain ``torch.empty`` (the graph's private pool
    serves them during capture). Every other batch runs the varlen prefill kernel.
    """

    name = "triton"
    prepare_in_graph = True  # the launch order is sorted on the device every step
    # decode batches of at least this many sequences launch longest context first
    ORDER_MIN_SEQS = 32
    supports_cuda_graphs = True
    varlen_in_graph = True  # the prefill kernel reads lengths on the device; padded rows exit
    rotary_stores_kv = True  # the rotary kernel stores k/v in the same launch
    kv_cache_dtypes = torch_ops.FP8_KV_DTYPES  # k / k_scale, v / v_scale in float8 e4m3

    def __init__(self, device: torch.device, dtype: torch.dtype, block_size: int,
                 kv_cache_dtype: torch.dtype | None = None):
        super().__init__(device, dtype, block_size, kv_cache_dtype)
        if self.kv_cache_dtype in torch_ops.FP8_KV_DTYPES and not fp8_supported(device):
            raise ValueError(f"kv_cache_dtype fp8 needs an NVIDIA GPU of compute capability "
                             f">= 8.9 with the triton backend, not {device_name(device)}; "
                             f"use kv_cache_dtype 'auto', or kernels 'torch' (slower)")

    def prepare(self, meta: AttentionMetadata) -> AttentionMetadata:
        """Decode batches: the rows sorted by context, longest first (one small kernel a step;
        inside the decode graphs, so replays sort the step's own lengths)."""
        if meta.is_decode and meta.num_seqs >= self.ORDER_MIN_SEQS:
            meta.extra["decode_order"] = decode_order(meta.seq_lens)
        return meta

    def forward(self, spec: AttentionSpec, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                kv_cache: torch.Tensor, meta: AttentionMetadata,
                out: torch.Tensor | None = None) -> torch.Tensor:
        if q.dim() != 3 or q.shape[1] != spec.num_heads or q.shape[2] != spec.head_dim:
            raise ValueError(f"q must be [T, {spec.num_heads}, {spec.head_dim}], "
                             f"got {tuple(q.shape)}")
        k_cache, v_cache = kv_cache[0], kv_cache[1]
        if not spec.kv_stored:
            reshape_and_cache(k, v, k_cache, v_cache, meta.slot_mapping, spec.k_scale,
                              spec.v_scale)
        o = None if out is None else out.view(q.shape)  # [T, H*D] rows -> [T, H, D]
        if meta.is_decode and q.shape[0] == meta.seq_lens.shape[0]:
            o = decode_attention(q, k_cache, v_cache, meta.block_tables, meta.seq_lens,
                                 spec.scale, spec.sliding_window, spec.logit_softcap, out=o,
                                 k_scale=spec.k_scale, v_scale=spec.v_scale,
                                 order=meta.extra.get("decode_order"))
        else:
            o = prefill_attention(q, k_cache, v_cache, meta.block_tables, meta.query_start_loc,
                                  meta.seq_lens, meta.max_query_len, spec.scale,
                                  spec.sliding_window, spec.logit_softcap, out=o,
                                  k_scale=spec.k_scale, v_scale=spec.v_scale)
        return o.view(q.shape[0], -1) if out is None else out
