"""Block tables kept as rows of one CPU tensor, so a step gathers them with one index.

Each running sequence owns a row that only receives its newly added blocks. A row is taken
back when its sequence has finished or left the running set (preempted: its table is rebuilt
from scratch when it returns), so host work per step is O(batch), not O(batch x table length).
"""
from __future__ import annotations

import torch

from litevllm.engine.host_tensors import int_tensor


class BlockTableRows:
    def __init__(self, max_blocks_per_seq: int, capacity: int):
        self.rows = torch.zeros(capacity, max_blocks_per_seq, dtype=torch.int32)
        self.owner: list = [None] * capacity
        self.free = list(range(capacity - 1, -1, -1))

    def _reclaim(self) -> None:
        """Free the rows of sequences no longer running (finished or preempted)."""
        for i, seq in enumerate(self.owner):
            if seq is not None and (seq.is_finished or seq.runner_state[1] is not seq.block_table
                                    or not seq.block_table):
                self.owner[i] = None
                self.free.append(i)
        if not self.free:  # more live sequences than rows: grow
            old = self.rows.shape[0]
            self.rows = torch.cat([self.rows, torch.zeros_like(self.rows)])
            self.owner += [None] * old
            self.free = list(range(2 * old - 1, old - 1, -1))

    def _row(self, seq) -> None:
        """Give ``seq`` a zeroed row for its current table; its state is
        [row, the table object the row mirrors, blocks copied]."""
        state, table = seq.runner_state, seq.block_table
        if state is not None and self.owner[state[0]] is seq:
            row = state[0]  # preempted and back, or a new table: start over in the same row
        else:
            if not self.free:
                self._reclaim()
            row = self.free.pop()
            self.owner[row] = seq
        self.rows[row].zero_()
        seq.runner_state = [row, table, 0]

    def gather(self, seqs) -> torch.Tensor:
        """[B, width] int32 on the CPU, width = the longest table in the batch."""
        index, width = [], 1
        rows = self.rows
        for seq in seqs:
            state, table = seq.runner_state, seq.block_table
            if state is None or state[1] is not table:  # a row is only taken back after this
                self._row(seq)
                state = seq.runner_state
            n = len(table)
            if n > state[2]:
                rows[state[0], state[2]:n] = int_tensor(table[state[2]:], torch.int32)
                state[2] = n
            index.append(state[0])
            if n > width:
                width = n
        return rows[:, :width][int_tensor(index)]
