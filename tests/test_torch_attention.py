"""The batched torch decode path computes exactly what the per-sequence reference does."""
import pytest
import torch

from litevllm.attention.backend import AttentionSpec
from litevllm.attention.torch_backend import paged_attention_ref, paged_decode_attention


@pytest.mark.parametrize("window,softcap", [(None, None), (5, None), (None, 3.0), (7, 2.0)])
@pytest.mark.parametrize("chunk", [1 << 16, 40])
def test_batched_decode_matches_reference(window, softcap, chunk):
    g = torch.Generator().manual_seed(0)
    bs, blocks, hkv, h, d = 4, 40, 2, 6, 8
    k_cache = torch.randn(blocks, bs, hkv, d, generator=g)
    v_cache = torch.randn(blocks, bs, hkv, d, generator=g)
    seq_lens = [1, 9, 16, 23, 4]
    perm = torch.randperm(blocks, generator=g)
    width = max(-(-n // bs) for n in seq_lens)
    tables = torch.zeros(len(seq_lens), width, dtype=torch.int32)
    used = 0
    for i, n in enumerate(seq_lens):  # shuffled, non-contiguous blocks per sequence
        nb = -(-n // bs)
        tables[i, :nb] = perm[used:used + nb]
        used += nb
    spec = AttentionSpec(h, hkv, d, scale=0.3, sliding_window=window, logit_softcap=softcap)
    q = torch.randn(len(seq_lens), h, d, generator=g)
    ref = paged_attention_ref(q, k_cache, v_cache, tables, [1] * len(seq_lens), seq_lens, spec)
    got = paged_decode_attention(q, k_cache, v_cache, tables, torch.tensor(seq_lens),
                                 max(seq_lens), spec, max_tokens_per_chunk=chunk)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
