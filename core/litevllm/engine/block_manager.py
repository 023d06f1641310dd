"""Paged KV-cache blocks: allocation, reference counts, prefix-cache hashes, LRU eviction.

A full block is identified by a hash chained over its parent's hash and its token ids. Freed
blocks that hold a hash stay findable until the allocator reuses them, least recently freed
first.
"""
from __future__ import annotations

from collections import OrderedDict

from litevllm.engine.sequence import Sequence


class NoFreeBlocks(RuntimeError):
    pass


def block_hash(parent: int | None, tokens: tuple[int, ...]) -> int:
    return hash((parent, tokens))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.num_blocks, self.block_size = num_blocks, block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_count = [0] * num_blocks
        self.hash_of: list[int | None] = [None] * num_blocks
        self.cached: dict[int, int] = {}                     # hash -> block id
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.pending_copies: list[tuple[int, int]] = []      # (src, dst) for forked sequences
        self.hits = self.queries = 0                         # prefix-cache token counters

    # queries ---------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _hashes(self, seq: Sequence, upto_tokens: int) -> list[int]:
        """Chained hashes of the full blocks among the first ``upto_tokens`` tokens."""
        hashes = seq.block_hashes
        bs = self.block_size
        while len(hashes) < upto_tokens // bs:
            i = len(hashes)
            hashes.append(block_hash(hashes[-1] if hashes else None,
                                     tuple(seq.token_ids[i * bs:(i + 1) * bs])))
        return hashes[:upto_tokens // bs]

    def cached_prefix(self, seq: Sequence) -> list[int]:
        """Cached block ids of ``seq``'s longest cached prefix. The last token is never served
        from the cache, so a fully cached prompt still computes its logits."""
        if not self.enable_prefix_caching:
            return []
        blocks = []
        for h in self._hashes(seq, seq.num_tokens - 1):
            block = self.cached.get(h)
            if block is None:
                break
            blocks.append(block)
        return blocks

    def can_allocate(self, seq: Sequence, num_new_tokens: int, cached: list[int] = (),
                     reserve: int = 0) -> bool:
        """Whether ``num_new_tokens`` more tokens fit while keeping ``reserve`` blocks free;
        ``cached`` is the prefix a sequence without blocks would attach first."""
        if seq.block_table:
            need = self.blocks_needed(seq.num_computed_tokens + num_new_tokens) - len(seq.block_table)
            return need + reserve <= self.num_free_blocks
        revive = sum(1 for b in cached if self.ref_count[b] == 0)
        need = self.blocks_needed(len(cached) * self.block_size + num_new_tokens) - len(cached)
        return need + revive + reserve <= self.num_free_blocks

    # mutations -------------------------------------------------------------------------------
    def _take_free(self) -> int:
        if not self.free:
            raise NoFreeBlocks("out of KV-cache blocks")
        block, _ = self.free.popitem(last=False)
        h = self.hash_of[block]
        if h is not None:  # evict
            if self.cached.get(h) == block:
                del self.cached[h]
            self.hash_of[block] = None
        self.ref_count[block] = 1
        return block

    def _ref(self, block: int) -> None:
        if self.ref_count[block] == 0:
            del self.free[block]
        self.ref_count[block] += 1

    def use_cached_prefix(self, seq: Sequence, cached: list[int]) -> None:
        """Attach cached blocks to a sequence that has no blocks yet."""
        assert not seq.block_table
        for b in cached:
            self._ref(b)
        seq.block_table = list(cached)
        seq.num_computed_tokens = len(cached) * self.block_size
        self.queries += seq.num_tokens
        self.hits += seq.num_computed_tokens

    def allocate(self, seq: Sequence, num_new_tokens: int) -> None:
        """Make room for ``num_new_tokens`` more tokens after the computed ones."""
        need = self.blocks_needed(seq.num_computed_tokens + num_new_tokens) - len(seq.block_table)
        if need > self.num_free_blocks:
            raise NoFreeBlocks("out of KV-cache blocks")
        seq.block_table.extend(self._take_free() for _ in range(need))

    def commit(self, seq: Sequence) -> None:
        """Publish the hashes of blocks that became full and computed."""
        if not self.enable_prefix_caching or \
                seq.num_computed_tokens // self.block_size <= seq.num_committed_blocks:
            return
        hashes = self._hashes(seq, seq.num_computed_tokens)
        start = seq.num_committed_blocks
        seq.num_committed_blocks = len(hashes)
        for i in range(start, len(hashes)):
            h, block = hashes[i], seq.block_table[i]
            if self.hash_of[block] is None and h not in self.cached:
                self.hash_of[block] = h
                self.cached[h] = block

    def trim(self, seq: Sequence, num_tokens: int) -> None:
        """Roll back: free the blocks past those holding ``num_tokens`` tokens (lookahead slots
        that were never filled with verified tokens; such blocks are never published)."""
        keep = self.blocks_needed(num_tokens)
        if len(seq.block_table) <= keep:
            return
        for block in seq.block_table[keep:]:
            assert self.ref_count[block] == 1 and self.hash_of[block] is None
            self.ref_count[block] = 0
            self.free[block] = None
        seq.block_table = seq.block_table[:keep]  # a new list: mirrors of the old one resync

    def free_seq(self, seq: Sequence) -> None:
        """Drop the sequence's references; blocks reaching zero go to the LRU free list,
        the tail of the sequence first so its prefix stays cached longest."""
        for block in reversed(seq.block_table):
            self.ref_count[block] -= 1
            assert self.ref_count[block] >= 0, f"block {block} freed twice"
            if self.ref_count[block] == 0:
                self.free[block] = None
        seq.block_table = []
        seq.num_computed_tokens = 0
        seq.num_committed_blocks = 0

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Share ``parent``'s full blocks with ``child``; copy its partial last block."""
        full = parent.num_computed_tokens // self.block_size
        for b in parent.block_table[:full]:
            self._ref(b)
        child.block_table = parent.block_table[:full]
        child.block_hashes = list(parent.block_hashes)
        if full < len(parent.block_table):
            dst = self._take_free()
            self.pending_copies.append((parent.block_table[full], dst))
            child.block_table.append(dst)
        child.num_computed_tokens = parent.num_computed_tokens

    def take_copies(self) -> list[tuple[int, int]]:
        copies, self.pending_copies = self.pending_copies, []
        return copies

    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0
