"""Reference attention over the paged KV cache in plain torch. Runs on any device."""
from __future__ import annotations

import torch

from litevllm.attention.backend import AttentionBackend, AttentionMetadata, AttentionSpec
from litevllm.ops.torch_ops import FP8_KV_DTYPES, gather_kv, reshape_and_cache


def paged_attention_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                        block_tables: torch.Tensor, query_lens: list[int], seq_lens: list[int],
                        spec: AttentionSpec) -> torch.Tensor:
    """q [T, H, D]; caches [num_blocks, block_size, Hkv, D] (float8 caches are dequantized with
    ``spec.k_scale``/``spec.v_scale``). Returns [T, H, D]."""
    bs = k_cache.shape[1]
    group = spec.num_heads // spec.num_kv_heads
    out = torch.empty_like(q)
    start = 0
    for b, (ql, sl) in enumerate(zip(query_lens, seq_lens)):
        nblk = (sl + bs - 1) // bs
        blocks = block_tables[b, :nblk].long()
        k = gather_kv(k_cache, blocks, spec.k_scale).flatten(0, 1)[:sl]  # [S, Hkv, D] float32
        v = gather_kv(v_cache, blocks, spec.v_scale).flatten(0, 1)[:sl]
        qb = q[start:start + ql].float().transpose(0, 1)             # [H, ql, D]
        k = k.transpose(0, 1).repeat_interleave(group, 0)            # [H, S, D]
        v = v.transpose(0, 1).repeat_interleave(group, 0)
        scores = (qb @ k.transpose(1, 2)) * spec.scale
        if spec.logit_softcap:
            scores = spec.logit_softcap * torch.tanh(scores / spec.logit_softcap)
        qpos = torch.arange(sl - ql, sl, device=q.device)[:, None]
        kpos = torch.arange(sl, device=q.device)[None, :]
        mask = kpos <= qpos
        if spec.sliding_window:
            mask &= (qpos - kpos) < spec.sliding_window
        scores = scores.masked_fill(~mask, float("-inf"))
        out[start:start + ql] = (torch.softmax(scores, -1) @ v).transpose(0, 1).to(q.dtype)
        start += ql
    return out


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_tables: torch.Tensor, seq_lens: torch.Tensor, longest: int,
                           spec: AttentionSpec, max_tokens_per_chunk: int = 1 << 16) -> torch.Tensor:
    """One query per sequence, batched: q [B, H, D] -> [B, H, D]; ``seq_lens`` [B] on q's device,
    ``longest`` their maximum. Same maths as :func:`paged_attention_ref`; sequences are padded
    to the longest and masked, in chunks of at most ``max_tokens_per_chunk`` gathered keys."""
    bsz, bs = q.shape[0], k_cache.shape[1]
    hkv, group = spec.num_kv_heads, spec.num_heads // spec.num_kv_heads
    out = torch.empty_like(q)
    step = max(1, max_tokens_per_chunk // longest)
    nblk = -(-longest // bs)
    kpos = torch.arange(nblk * bs, device=q.device)[None, :]
    for lo in range(0, bsz, step):
        hi = min(bsz, lo + step)
        blocks = block_tables[lo:hi, :nblk].long()                        # [b, nblk]
        k = gather_kv(k_cache, blocks, spec.k_scale).flatten(1, 2)        # [b, S, Hkv, D]
        v = gather_kv(v_cache, blocks, spec.v_scale).flatten(1, 2)
        qb = q[lo:hi].float().view(hi - lo, hkv, group, -1)              # [b, Hkv, G, D]
        scores = torch.einsum("bkgd,bskd->bkgs", qb, k) * spec.scale
        if spec.logit_softcap:
            scores = spec.logit_softcap * torch.tanh(scores / spec.logit_softcap)
        qpos = seq_lens[lo:hi, None].long() - 1
        mask = kpos <= qpos
        if spec.sliding_window:
            mask &= (qpos - kpos) < spec.sliding_window
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        o = torch.einsum("bkgs,bskd->bkgd", torch.softmax(scores, -1), v)
        out[lo:hi] = o.reshape(hi - lo, spec.num_heads, -1).to(q.dtype)
    return out


class TorchAttentionBackend(AttentionBackend):
    """Reference backend: gathers each sequence's blocks and runs masked softmax attention
    (decode batches in one batched pass)."""

    name = "torch"
    kv_cache_dtypes = FP8_KV_DTYPES
    rotary_stores_kv = True  # the reference rotary op stores k/v as reshape_and_cache does

    def forward(self, spec: AttentionSpec, q, k, v, kv_cache, meta: AttentionMetadata, out=None):
        if not spec.kv_stored:
            reshape_and_cache(k, v, kv_cache[0], kv_cache[1], meta.slot_mapping, spec.k_scale,
                              spec.v_scale)
        if meta.is_decode and meta.num_seqs > 1:
            attn = paged_decode_attention(q, kv_cache[0], kv_cache[1], meta.block_tables,
                                          meta.seq_lens, meta.max_seq_len, spec)
        else:
            attn = paged_attention_ref(q, kv_cache[0], kv_cache[1], meta.block_tables,
                                       meta.query_lens_cpu, meta.seq_lens_cpu, spec)
        return attn.flatten(1) if out is None else out.copy_(attn.flatten(1))
