"""The skinny GEMM (kernels/gemv.py) and the linear / gated_linear ops against torch."""
import pytest
import torch
from triton_test_utils import TOL

from litevllm.plugin_api import torch_ops as ref
from litevllm_triton import gemv_table, ops
from litevllm_triton.kernels import gemv as gemv_mod
from litevllm_triton.kernels.gemv import gemv

DTYPES = [torch.float32, torch.float16]
CONFIGS = [dict(DOT=False, BM=1, BN=8, BK=32, SPLIT_K=1),
           dict(DOT=False, BM=4, BN=4, BK=64, SPLIT_K=3),  # uneven: 100 = 64 + 36
           dict(DOT=True, BM=16, BN=16, BK=32, SPLIT_K=2),
           dict(DOT=True, BM=16, BN=32, BK=16, SPLIT_K=1),
           dict(DOT=True, BM=32, BN=16, BK=32, SPLIT_K=2),  # decode batches of 17..64 rows
           dict(DOT=True, SWAP=True, BM=16, BN=32, BK=32, SPLIT_K=2),  # W x^T tiles
           dict(DOT=True, SWAP=True, BM=32, BN=16, BK=16, SPLIT_K=1)]


def want(x, w, b, act):
    if act is None:
        return ref.linear(x.float(), w.float(), None if b is None else b.float()).to(x.dtype)
    return ref.gated_linear(x, w, b, act)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{'swap' if c.get('SWAP') else 'dot' if c['DOT'] else 'fma'}"
                         f"{c['BM']}x{c['BN']}x{c['BK']}s{c['SPLIT_K']}")
@pytest.mark.parametrize("m,act,bias", [(1, None, False), (3, None, True), (5, None, False),
                                        (1, "silu", False), (2, "gelu_tanh", True),
                                        (40, "silu", True)])
def test_gemv_matches_torch(dtype, cfg, m, act, bias):
    x = torch.randn(m, 100, dtype=dtype)
    w = torch.randn(2 * 36, 100, dtype=dtype) / 8
    b = torch.randn(72, dtype=dtype) if bias else None
    got = gemv(x, w, b, cfg, act)
    assert got.shape == (m, 36 if act else 72)
    torch.testing.assert_close(got, want(x, w, b, act), **TOL[dtype])
    assert not gemv_mod._locks[x.device].any(), "split-K counters must be zero after a launch"


@pytest.mark.parametrize("cfg", [dict(DOT=True, BM=64, BN=16, BK=32, SPLIT_K=2),
                                 dict(DOT=True, SWAP=True, BM=64, BN=16, BK=32, SPLIT_K=1)],
                         ids=["dot64", "swap64"])
def test_gemv_rows_past_64(cfg):
    """Decode batches of 65..256 rows: several row blocks, plain and gated."""
    x = torch.randn(130, 100)
    w = torch.randn(2 * 24, 100) / 8
    for act in (None, "silu"):
        torch.testing.assert_close(gemv(x, w, None, cfg, act), want(x, w, None, act),
                                   **TOL[torch.float32])


def test_gemv_strided_rows():
    x = torch.randn(3, 256)[:, :100]  # row stride 256
    w = torch.randn(40, 100)
    got = gemv(x, w, None, CONFIGS[2])
    torch.testing.assert_close(got, ref.linear(x, w), **TOL[torch.float32])


@pytest.mark.parametrize("call,match", [
    (lambda: gemv(torch.randn(257, 8), torch.randn(4, 8), None, CONFIGS[0]), "1..256 rows"),
    (lambda: gemv(torch.randn(1, 8), torch.randn(4, 9), None, CONFIGS[0]), "K=8"),
    (lambda: gemv(torch.randn(1, 8), torch.randn(4, 8).half(), None, CONFIGS[0]), "share"),
    (lambda: gemv(torch.randn(1, 8), torch.randn(5, 8), None, CONFIGS[0], "silu"), "even"),
    (lambda: gemv(torch.randn(1, 8), torch.randn(4, 8), None, CONFIGS[0], "relu"), "activation"),
    (lambda: gemv(torch.randn(1, 8), torch.randn(4, 8), torch.randn(3), CONFIGS[0]), "bias"),
    (lambda: gemv(torch.randn(1, 8), torch.randn(4, 8), None, dict(CONFIGS[2], BN=8)), "DOT"),
    (lambda: gemv(torch.randn(1, 8), torch.randn(4, 8), None, dict(CONFIGS[0], SWAP=True)),
     "SWAP needs DOT"),
])
def test_gemv_rejects_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.fixture
def table(monkeypatch):
    """A tuned entry for [*, 64] x [48, 64] on the CPU (the interpreter's device)."""
    entry = {"1": CONFIGS[0], "2": None, "4": CONFIGS[1], "8": CONFIGS[2], "16": CONFIGS[3],
             "64": CONFIGS[4]}
    t = {gemv_table.table_key("linear", 48, 64): entry,
         gemv_table.table_key("gated", 24, 64): entry}
    monkeypatch.setattr(gemv_table, "_load", lambda device: t)


@pytest.mark.parametrize("m", [1, 2, 3, 7, 16, 17, 33, 64, 65])
def test_ops_use_the_table_and_match_torch(table, m, monkeypatch):
    calls = []
    real = ops.gemv
    monkeypatch.setattr(ops, "gemv", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    x, w, b = torch.randn(m, 64), torch.randn(48, 64), torch.randn(48)
    torch.testing.assert_close(ops.linear(x, w, b), ref.linear(x, w, b), **TOL[torch.float32])
    for act in ("silu", "gelu_tanh"):
        torch.testing.assert_close(ops.gated_linear(x, w, b, act), ref.gated_linear(x, w, b, act),
                                   **TOL[torch.float32])
    # bucket 2 is null (cuBLAS), 32 has no entry (cuBLAS) and 65 rows are past the GEMV
    used = m in (1, 3, 7, 16, 33, 64)
    assert len(calls) == (3 if used else 0)


def test_gemv_off_switch(monkeypatch, tmp_path):
    monkeypatch.setattr(gemv_table, "CONFIG_DIR", tmp_path)
    (tmp_path / "cpu.json").write_text('{"linear:4:8": {"1": {"DOT": false}}}')
    gemv_table._load.cache_clear()
    try:
        assert gemv_table.gemv_config("linear", 1, 4, 8, torch.device("cpu")) == {"DOT": False}
        gemv_table._load.cache_clear()
        monkeypatch.setenv("LITEVLLM_GEMV", "0")
        assert gemv_table.gemv_config("linear", 1, 4, 8, torch.device("cpu")) is None
    finally:
        gemv_table._load.cache_clear()
