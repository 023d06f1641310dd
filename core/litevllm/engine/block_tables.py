"""Block tables kept as rows of one CPU tensor, so a step gathers them with one index.

Each running sequence (by id) owns a row that only receives its newly added blocks; a new table
object (preempted and back, or forked) starts the row over. ``release`` takes rows back when
sequences finish, so host work per step is O(batch), not O(batch x table length).
"""
from __future__ import annotations

import torch

from litevllm.engine.host_tensors import int_tensor


class BlockTableRows:
    def __init__(self, max_blocks_per_seq: int, capacity: int):
        self.rows = torch.zeros(capacity, max_blocks_per_seq, dtype=torch.int32)
        self.free = list(range(capacity - 1, -1, -1))
        self.state: dict[int, list] = {}  # seq_id -> [row, the table it mirrors, blocks copied]

    def release(self, seq_ids) -> None:
        for seq_id in seq_ids:
            state = self.state.pop(seq_id, None)
            if state is not None:
                self.free.append(state[0])

    def _take_row(self) -> int:
        if not self.free:  # more live sequences than rows: grow
            old = self.rows.shape[0]
            self.rows = torch.cat([self.rows, torch.zeros_like(self.rows)])
            self.free = list(range(2 * old - 1, old - 1, -1))
        return self.free.pop()

    def gather(self, seqs) -> torch.Tensor:
        """[B, width] int32 on the CPU, width = the longest table in the batch. New blocks of
        all rows are written with one indexed store (one per row costs ~2.5 us each)."""
        index, width = [], 1
        get, add = self.state.get, index.append
        at, blocks = [], []   # flat positions in ``rows`` and the block ids written there
        for seq in seqs:
            table = seq.block_table
            state = get(seq.seq_id)
            if state is None or state[1] is not table:
                row = self._take_row() if state is None else state[0]
                self.rows[row].zero_()
                state = self.state[seq.seq_id] = [row, table, 0]
            n = len(table)
            if n > state[2]:
                base = state[0] * self.rows.shape[1]
                at.extend(range(base + state[2], base + n))
                blocks.extend(table[state[2]:])
                state[2] = n
            add(state[0])
            if n > width:
                width = n
        rows = self.rows
        if width > rows.shape[1]:
            raise ValueError(f"a block table of {width} blocks is longer than the "
                             f"{rows.shape[1]} a sequence may hold")
        if at:
            rows.view(-1)[int_tensor(at)] = int_tensor(blocks, torch.int32)
        return rows[:, :width][int_tensor(index)]
