"""Block manager: allocation, reference counts, prefix-cache hashes, LRU eviction, forks."""
from collections import Counter

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from litevllm.engine.block_manager import BlockManager, NoFreeBlocks
from litevllm.engine.sequence import Sequence
from litevllm.sampling_params import SamplingParams

BS = 4
_ids = iter(range(10**9))


def seq(tokens):
    return Sequence(next(_ids), "r", tokens, SamplingParams())


def computed(bm, s, n=None):
    """Allocate and 'compute' the first n (default all) tokens of s, publishing full blocks."""
    n = s.num_tokens if n is None else n
    bm.allocate(s, n - s.num_computed_tokens)
    s.num_computed_tokens = n
    bm.commit(s)
    return s


def test_allocate_and_free():
    bm = BlockManager(8, BS)
    s = computed(bm, seq(list(range(10))))
    assert len(s.block_table) == 3 and bm.num_free_blocks == 5
    assert all(bm.ref_count[b] == 1 for b in s.block_table)
    bm.free_seq(s)
    assert bm.num_free_blocks == 8 and sum(bm.ref_count) == 0 and s.block_table == []
    with pytest.raises(NoFreeBlocks):
        bm.allocate(seq(list(range(40))), 40)


def test_prefix_hit_shares_blocks():
    bm = BlockManager(8, BS)
    a = computed(bm, seq(list(range(10))))             # blocks: [0-3] [4-7] [8,9]
    b = seq(list(range(8)) + [50, 51, 52])
    cached = bm.cached_prefix(b)
    assert cached == a.block_table[:2]
    assert bm.can_allocate(b, 3, cached)
    bm.use_cached_prefix(b, cached)
    assert b.num_computed_tokens == 8 and all(bm.ref_count[x] == 2 for x in cached)
    assert (bm.hits, bm.queries) == (8, 11)


def test_last_token_is_never_served_from_cache():
    bm = BlockManager(8, BS)
    computed(bm, seq(list(range(8))))
    assert len(bm.cached_prefix(seq(list(range(8))))) == 1   # 7 tokens looked up: 1 full block
    assert len(bm.cached_prefix(seq(list(range(9))))) == 2


def test_hashes_are_chained():
    """Equal block contents after different prefixes are different blocks."""
    bm = BlockManager(8, BS)
    computed(bm, seq([1, 1, 1, 1, 7, 7, 7, 7, 0]))
    assert bm.cached_prefix(seq([2, 2, 2, 2, 7, 7, 7, 7, 0])) == []


def test_disabled_prefix_caching():
    bm = BlockManager(8, BS, enable_prefix_caching=False)
    computed(bm, seq(list(range(9))))
    assert bm.cached_prefix(seq(list(range(9)))) == [] and bm.cached == {}


def test_lru_eviction_keeps_prefix_longest():
    bm = BlockManager(3, BS)
    a = computed(bm, seq(list(range(12))))
    b0, b1, b2 = a.block_table
    bm.free_seq(a)                                   # tail first: b2 is evicted first
    c = computed(bm, seq([90, 91, 92]))
    assert c.block_table == [b2]
    again = seq(list(range(12)) + [5])
    assert bm.cached_prefix(again) == [b0, b1]
    bm.free_seq(c)
    # reviving cached free blocks counts against free space: 2 revived + 1 new fit in 3
    assert bm.can_allocate(again, 4, [b0, b1])
    assert not bm.can_allocate(again, 5, [b0, b1])


def test_fork_shares_full_blocks_and_copies_partial():
    bm = BlockManager(8, BS)
    parent = computed(bm, seq(list(range(6))))
    child = seq(list(range(6)))
    bm.fork(parent, child)
    assert child.block_table[0] == parent.block_table[0] and bm.ref_count[parent.block_table[0]] == 2
    assert child.block_table[1] != parent.block_table[1]
    assert bm.take_copies() == [(parent.block_table[1], child.block_table[1])]
    assert child.num_computed_tokens == 6 and bm.take_copies() == []
    bm.free_seq(parent)
    bm.free_seq(child)
    assert sum(bm.ref_count) == 0 and bm.num_free_blocks == 8


def test_double_free_is_caught():
    bm = BlockManager(4, BS)
    s = computed(bm, seq([1, 2, 3]))
    table = list(s.block_table)
    bm.free_seq(s)
    s.block_table = table
    with pytest.raises(AssertionError, match="freed twice"):
        bm.free_seq(s)


class BlockManagerMachine(RuleBasedStateMachine):
    """Random allocate / compute / fork / free / reuse; the books always balance."""

    def __init__(self):
        super().__init__()
        self.bm = BlockManager(12, BS)
        self.live: list[Sequence] = []

    @rule(prefix=st.sampled_from([[], [1, 2, 3, 4], [1, 2, 3, 4, 5, 6, 7, 8]]),
          tail=st.lists(st.integers(0, 3), min_size=1, max_size=9))
    def add(self, prefix, tail):
        s = seq(prefix + tail)
        cached = self.bm.cached_prefix(s)
        if self.bm.can_allocate(s, s.num_tokens - len(cached) * BS, cached):
            if cached:
                self.bm.use_cached_prefix(s, cached)
            computed(self.bm, s)
            self.live.append(s)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), token=st.integers(0, 3))
    def decode(self, data, token):
        s = data.draw(st.sampled_from(self.live))
        s.append_token(token)
        if self.bm.can_allocate(s, 1):
            computed(self.bm, s)
        else:
            s.token_ids.pop()

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def fork(self, data):
        parent = data.draw(st.sampled_from(self.live))
        if self.bm.num_free_blocks >= 1:
            child = seq(parent.token_ids[:parent.num_prompt_tokens])
            child.token_ids = list(parent.token_ids)
            self.bm.fork(parent, child)
            self.bm.take_copies()
            self.live.append(child)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data):
        s = data.draw(st.sampled_from(self.live))
        self.live.remove(s)
        self.bm.free_seq(s)

    @invariant()
    def books_balance(self):
        bm = self.bm
        refs = Counter(b for s in self.live for b in s.block_table)
        assert all(len(set(s.block_table)) == len(s.block_table) for s in self.live)
        assert [refs[b] for b in range(bm.num_blocks)] == bm.ref_count
        assert set(bm.free) == {b for b in range(bm.num_blocks) if bm.ref_count[b] == 0}
        for h, b in bm.cached.items():
            assert bm.hash_of[b] == h
        for s in self.live:  # a live sequence's cached blocks hold its own prefix
            for i, h in enumerate(s.block_hashes[:s.num_computed_tokens // BS]):
                if bm.hash_of[s.block_table[i]] is not None:
                    assert bm.hash_of[s.block_table[i]] == h

    def teardown(self):
        for s in self.live:
            self.bm.free_seq(s)
        assert sum(self.bm.ref_count) == 0 and self.bm.num_free_blocks == self.bm.num_blocks


TestBlockManagerMachine = BlockManagerMachine.TestCase
TestBlockManagerMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
