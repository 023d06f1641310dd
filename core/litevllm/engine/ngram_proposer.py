"""Prompt-lookup (n-gram) drafts, on the host with numpy: find the latest earlier occurrence of
the sequence's last n tokens (n from ``max_n`` down to ``min_n``) and propose the tokens that
followed it."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class NgramProposer:
    def __init__(self, num_tokens: int, min_n: int, max_n: int):
        self.k, self.min_n, self.max_n = num_tokens, min_n, max_n
        self.arrays: dict[int, np.ndarray] = {}   # seq_id -> token buffer (grown, not rebuilt)

    def tokens(self, seq_id: int, token_ids: list[int], synced: int) -> np.ndarray:
        buf = self.arrays.get(seq_id)
        n = len(token_ids)
        if buf is None or buf.shape[0] < n:
            new = np.empty(max(64, 2 * n), dtype=np.int64)
            if buf is not None:
                new[:synced] = buf[:synced]
            else:
                synced = 0
            buf = self.arrays[seq_id] = new
        buf[synced:n] = token_ids[synced:n]
        return buf[:n]

    def propose(self, tokens: np.ndarray, k: int | None = None) -> list[int]:
        """Up to ``k`` draft tokens following the latest earlier match of the suffix."""
        k = self.k if k is None else k
        length = tokens.shape[0]
        for n in range(min(self.max_n, length - 1), self.min_n - 1, -1):
            windows = sliding_window_view(tokens[:length - 1], n)  # starts 0 .. length-1-n
            hits = np.flatnonzero((windows == tokens[length - n:]).all(axis=1))
            if hits.size:
                start = int(hits[-1]) + n
                return tokens[start:start + k].tolist()
        return []

    def forget(self, seq_id: int) -> None:
        self.arrays.pop(seq_id, None)
