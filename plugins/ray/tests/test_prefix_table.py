"""Prefix-aware routing state: the longest shared prefix wins, dead replicas are forgotten."""
from litevllm_ray.prefix_table import PrefixTable, prefix_keys


def test_keys_chain_whole_prefix():
    a = prefix_keys(list(range(40)), 16)
    b = prefix_keys(list(range(32)) + [999] * 8, 16)
    c = prefix_keys([7] + list(range(1, 40)), 16)
    assert len(a) == 2 and a == b          # the partial third block is not keyed
    assert c[0] != a[0] and c[1] != a[1]   # a different first block changes every later key


def test_longest_match_and_forget():
    t = PrefixTable(block_size=4)
    system = [1, 2, 3, 4, 5, 6, 7, 8]
    t.record(prefix_keys(system, 4), "r1")
    t.record(prefix_keys(system[:4], 4), "r2")
    live = {"r1", "r2"}
    owners, depth = t.longest_match(prefix_keys(system + [9, 9, 9, 9], 4), live)
    assert owners == ["r1"] and depth == 2
    owners, depth = t.longest_match(prefix_keys([1, 2, 3, 4, 0, 0, 0, 0], 4), live)
    assert sorted(owners) == ["r1", "r2"] and depth == 1
    assert t.longest_match(prefix_keys([1, 2, 3, 4], 4), {"r2"}) == (["r2"], 1)
    t.forget("r1")
    assert t.longest_match(prefix_keys(system, 4), live) == (["r2"], 1)
    assert t.longest_match(prefix_keys([0] * 8, 4), live) == ([], 0)


def test_capacity_evicts_least_recent():
    t = PrefixTable(block_size=1, capacity=3)
    t.record(prefix_keys([1, 2, 3], 1), "r1")
    t.record(prefix_keys([9], 1), "r2")        # evicts the oldest key ([1])
    assert t.longest_match(prefix_keys([1], 1), {"r1", "r2"}) == ([], 0)
    assert t.longest_match(prefix_keys([9], 1), {"r1", "r2"}) == (["r2"], 1)

