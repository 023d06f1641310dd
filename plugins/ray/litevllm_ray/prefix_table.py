"""Which replica last saw which prompt prefix: the state behind prefix-aware routing.

Prompts are cut into blocks of ``block_size`` token ids; block ``i``'s key hashes blocks
``0..i``, like the engine's prefix cache, so a replica that holds key ``i`` has seen the whole
prefix up to it. The table is bounded (least recently used keys go first).
"""
from __future__ import annotations

from collections import OrderedDict


def prefix_keys(token_ids, block_size: int) -> list[int]:
    """Chained hashes of the prompt's full blocks."""
    keys, prev = [], 0
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        prev = hash((prev, tuple(token_ids[start:start + block_size])))
        keys.append(prev)
    return keys


class PrefixTable:
    def __init__(self, block_size: int = 16, capacity: int = 200_000):
        self.block_size, self.capacity = block_size, capacity
        self._owners: OrderedDict[int, dict] = OrderedDict()  # key -> {replica: None}, LRU

    def longest_match(self, keys: list[int], live) -> tuple[list, int]:
        """The live replicas holding the longest prefix of ``keys``, and its length in blocks."""
        for depth in range(len(keys), 0, -1):
            owners = self._owners.get(keys[depth - 1])
            if owners:
                found = [r for r in owners if r in live]
                if found:
                    return found, depth
        return [], 0

    def record(self, keys: list[int], replica) -> None:
        for key in keys:
            owners = self._owners.pop(key, None) or {}
            owners[replica] = None
            self._owners[key] = owners
        while len(self._owners) > self.capacity:
            self._owners.popitem(last=False)

    def forget(self, replica) -> None:
        """Drop a replica (it died: its cache is gone)."""
        for key in [k for k, owners in self._owners.items() if replica in owners]:
            owners = self._owners[key]
            owners.pop(replica, None)
            if not owners:
                del self._owners[key]
