"""The positions-and-slots kernel against the torch reference (exact), padding included."""
import random
import sys
from pathlib import Path

import pytest
import torch

from litevllm.plugin_api import torch_ops as ref
from litevllm_triton import kernels

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from test_host_state import random_step  # noqa: E402


@pytest.mark.parametrize("seed", range(3))
def test_positions_and_slots_match_the_reference(seed):
    rng = random.Random(seed)
    for _ in range(8):
        qsl, lens, tables, bs, want = random_step(rng, rng.randint(0, 40), rng.randint(0, 3))
        got = []
        for fn in (ref.positions_and_slots, kernels.positions_and_slots):
            pos, slots = torch.full((len(want),), 7), torch.full((len(want),), 7)
            fn(qsl, lens, tables, bs, pos, slots)
            got.append((pos.tolist(), slots.tolist()))
        assert got[0] == got[1] == ([p for p, _ in want], [s for _, s in want])


def test_positions_and_slots_many_rows_and_sequences():
    """Rows beyond one program's block, sequences beyond a few search steps."""
    counts = [1] * 300 + [1500]
    qsl = torch.tensor([sum(counts[:i]) for i in range(len(counts) + 1)], dtype=torch.int32)
    lens = torch.tensor([100 + c for c in counts], dtype=torch.int32)
    tables = torch.arange(len(counts) * 100, dtype=torch.int32).view(len(counts), 100)
    want, got = [], []
    for out, fn in ((want, ref.positions_and_slots), (got, kernels.positions_and_slots)):
        pos, slots = torch.empty(1900, dtype=torch.int64), torch.empty(1900, dtype=torch.int64)
        fn(qsl, lens, tables, 16, pos, slots)
        out += [pos, slots]
    assert all(torch.equal(a, b) for a, b in zip(want, got))
    assert want[0][299].item() == 100 and want[0][300].item() == 100 and want[1][-1].item() == -1


def test_positions_and_slots_errors():
    qsl, lens = torch.tensor([0, 2], dtype=torch.int32), torch.tensor([2], dtype=torch.int32)
    tables, pos, slots = torch.zeros(1, 1, dtype=torch.int32), torch.empty(2, dtype=torch.int64), \
        torch.empty(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="query_start_loc has dtype"):
        kernels.positions_and_slots(qsl.long(), lens, tables, 16, pos, slots)
    with pytest.raises(ValueError, match="describe the 1 sequences"):
        kernels.positions_and_slots(torch.tensor([0], dtype=torch.int32), lens, tables, 16, pos,
                                    slots)
    with pytest.raises(ValueError, match="slots has 3 rows"):
        kernels.positions_and_slots(qsl, lens, tables, 16, pos,
                                    torch.empty(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="block_size 0"):
        kernels.positions_and_slots(qsl, lens, tables, 0, pos, slots)
