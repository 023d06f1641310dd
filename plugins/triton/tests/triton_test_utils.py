"""Shared helpers for the Triton plugin tests (a unique module name: no clash with other
test directories' conftest modules in one pytest run)."""
import torch

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float16: dict(rtol=2e-3, atol=2e-3)}


def make_paged_batch(query_lens, seq_lens, num_kv_heads, head_dim, block_size, dtype,
                     extra_blocks=3):
    """Random caches plus shuffled, non-overlapping block tables covering every sequence.

    Returns (k_cache, v_cache, block_tables int32, query_start_loc int32, seq_lens int32).
    """
    need = [-(-s // block_size) for s in seq_lens]
    width = max(need) + 1
    num_blocks = sum(need) + extra_blocks
    k_cache = torch.randn(num_blocks, block_size, num_kv_heads, head_dim, dtype=dtype)
    v_cache = torch.randn_like(k_cache)
    ids = torch.randperm(num_blocks)
    tables, pos = [], 0
    for n in need:
        row = ids[pos:pos + n]
        pos += n
        pad = torch.randint(0, num_blocks, (width - n,))  # junk past the end must not be read
        tables.append(torch.cat((row, pad)))
    block_tables = torch.stack(tables).to(torch.int32)
    qsl = torch.zeros(len(query_lens) + 1, dtype=torch.int32)
    qsl[1:] = torch.tensor(query_lens).cumsum(0)
    return k_cache, v_cache, block_tables, qsl, torch.tensor(seq_lens, dtype=torch.int32)
