"""Each row's position and cache slot from a step's metadata (torch_ops.positions_and_slots):
one program per BLOCK rows, the owning sequence found by a binary search over the query starts.
One launch where the torch reference takes ~15 small kernels; it runs inside whole-step CUDA
graphs, so the host never builds per-token arrays."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm_triton.kernels._common import check_tensor

BLOCK = 1024
SEARCH_STEPS = 20  # binary-search steps: up to 2^20 - 1 sequences in a step


# sizes are not specialised on (==1, %16): one variant serves every step
@triton.jit(do_not_specialize=["num_rows", "num_seqs", "stride_bt", "block_size"])
def _positions_and_slots_kernel(qsl_ptr, seq_lens_ptr, tables_ptr, pos_ptr, slot_ptr,
                                num_rows, num_seqs, stride_bt, block_size,
                                BLOCK: tl.constexpr, STEPS: tl.constexpr):
    t = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    # owner: the number of sequences whose query rows end at or before row t
    lo = tl.zeros([BLOCK], tl.int32)
    hi = lo + num_seqs
    for _ in range(STEPS):
        live = lo < hi
        mid = (lo + hi) // 2
        right = live & (tl.load(qsl_ptr + 1 + mid, mask=live, other=0) <= t)
        lo = tl.where(right, mid + 1, lo)
        hi = tl.where(live & ~right, mid, hi)
    valid = lo < num_seqs
    owner = tl.where(valid, lo, 0)
    pos = tl.load(seq_lens_ptr + owner, mask=valid, other=0) \
        - tl.load(qsl_ptr + 1 + owner, mask=valid, other=0) + t
    pos = tl.where(valid, pos, 0)
    block = tl.load(tables_ptr + owner.to(tl.int64) * stride_bt + pos // block_size, mask=valid,
                    other=0)
    slot = tl.where(valid, block.to(tl.int64) * block_size + pos % block_size, -1)
    keep = t < num_rows
    tl.store(pos_ptr + t, pos.to(tl.int64), mask=keep)
    tl.store(slot_ptr + t, slot, mask=keep)


def positions_and_slots(query_start_loc: torch.Tensor, seq_lens: torch.Tensor,
                        block_tables: torch.Tensor, block_size: int, positions: torch.Tensor,
                        slots: torch.Tensor) -> None:
    """Fill ``positions`` and ``slots`` [T] int64: row t of sequence b sits at position
    ``seq_lens[b] - query_start_loc[b+1] + t`` and writes slot ``block_tables[b, pos //
    block_size] * block_size + pos % block_size``; rows past ``query_start_loc[B]`` get
    position 0 and slot -1. query_start_loc [B+1], seq_lens [B], block_tables [B, W]: int32."""
    dev = query_start_loc.device
    check_tensor("query_start_loc", query_start_loc, 1, dtypes=(torch.int32,), device=dev)
    check_tensor("seq_lens", seq_lens, 1, dtypes=(torch.int32,), device=dev)
    check_tensor("block_tables", block_tables, 2, dtypes=(torch.int32,), device=dev)
    check_tensor("positions", positions, 1, dtypes=(torch.int64,), device=dev)
    check_tensor("slots", slots, 1, dtypes=(torch.int64,), device=dev)
    b, t = seq_lens.shape[0], positions.shape[0]
    if query_start_loc.shape[0] != b + 1 or block_tables.shape[0] != b:
        raise ValueError(f"query_start_loc ({query_start_loc.shape[0]}) and block_tables "
                         f"({block_tables.shape[0]} rows) must describe the {b} sequences of "
                         f"seq_lens")
    if slots.shape[0] != t:
        raise ValueError(f"slots has {slots.shape[0]} rows, positions {t}")
    if not 0 < block_size or b >= 1 << SEARCH_STEPS:
        raise ValueError(f"block_size {block_size} must be positive and the step must have "
                         f"fewer than {1 << SEARCH_STEPS} sequences, got {b}")
    if t == 0:
        return
    _positions_and_slots_kernel[(triton.cdiv(t, BLOCK),)](
        query_start_loc, seq_lens, block_tables, positions, slots, t, b,
        block_tables.stride(0), block_size, BLOCK=BLOCK, STEPS=SEARCH_STEPS, num_warps=4)
