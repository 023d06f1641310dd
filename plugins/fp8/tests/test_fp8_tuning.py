"""The per-GPU GEMV table (kernels/configs/<device>.json) and its lookup, on the CPU with the
device name mocked."""
import json

import pytest
import torch

from litevllm_fp8.kernels import tuning
from litevllm_fp8.kernels import w8a16_gemv as gemv

CPU = torch.device("cpu")
# Llama-3-8B linears (K, N) measured on the H200
QKV, O, GATE_UP, DOWN = (4096, 6144), (4096, 4096), (4096, 28672), (14336, 4096)


@pytest.fixture
def gpu(monkeypatch):
    """Name the CPU device as a GPU for the lookup."""
    def use(name):
        monkeypatch.setattr(tuning, "device_name", lambda device: name)
        tuning.lookup.cache_clear()
    yield use
    tuning.lookup.cache_clear()


def test_h200_table_loads():
    table = tuning.load("NVIDIA_H200")
    assert set(table) == {(m, k, n) for m in (1, 4) for k, n in (QKV, O, GATE_UP, DOWN)}
    raw = json.loads((tuning.CONFIG_DIR / "NVIDIA_H200.json").read_text())
    assert set(raw["measured_us"]) == set(raw["gemv"])
    for cfg in table.values():
        assert cfg is None or set(cfg) == {"BLOCK_N", "BLOCK_K", "VEC", "EACH", "num_warps",
                                           "UNROLL", "SPLIT_K"}


def test_h200_maps_shapes_and_m(gpu):
    gpu("NVIDIA_H200")
    table = tuning.load("NVIDIA_H200")
    dt = torch.bfloat16
    for k, n in (QKV, O, GATE_UP, DOWN):
        assert gemv.default_config(1, n, k, k, CPU, dt) == table[(1, k, n)]
        for m in (2, 3, 4):  # nearest measured M by ratio, the tie at 2 to the larger
            assert gemv.default_config(m, n, k, k, CPU, dt) == table[(4, k, n)]
    assert gemv.default_config(1, *O[::-1], O[0], CPU, dt)["BLOCK_N"] == 4
    assert gemv.default_config(4, *O[::-1], O[0], CPU, dt) is None  # tl.dot won
    # an unmeasured shape, and a K with no entry for this N: the heuristic
    for n, k in ((512, 4096), (4096, 8192)):
        assert gemv.default_config(1, n, k, k, CPU, dt) == \
            gemv.heuristic_config(1, n, k, k, CPU, dt)
    # block-wise scales that BLOCK_K does not divide: the heuristic; a null entry still holds
    k, n = QKV
    assert gemv.default_config(1, n, k, 128, CPU, dt) == gemv.heuristic_config(1, n, k, 128,
                                                                              CPU, dt)
    assert gemv.default_config(4, *O[::-1], 128, CPU, dt) is None


@pytest.mark.parametrize("name", ["cpu", "NVIDIA_A100-SXM4-80GB"])
def test_other_devices_use_heuristic(gpu, name):
    gpu(name)
    k, n = QKV
    for m in (1, 2, 4):
        assert tuning.lookup(m, k, n, CPU) == (False, None)
        assert gemv.default_config(m, n, k, k, CPU, torch.float16) == \
            gemv.heuristic_config(m, n, k, k, CPU, torch.float16)


def test_pick_overrides_table(gpu, monkeypatch):
    """bench_fp8.py --pick: this process's picks win over the file."""
    gpu("NVIDIA_H200")
    monkeypatch.setattr(tuning, "_picks", {})
    k, n = GATE_UP
    cfg = dict(BLOCK_N=8, BLOCK_K=256, VEC=8, EACH=True, num_warps=8, UNROLL=2, SPLIT_K=2)
    tuning.set_pick(CPU, 4, k, n, cfg)
    tuning.set_pick(CPU, 1, k, n, None)
    assert gemv.default_config(3, n, k, k, CPU, torch.bfloat16) == cfg
    assert gemv.default_config(1, n, k, k, CPU, torch.bfloat16) is None
