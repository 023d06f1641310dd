"""Dequantization of every supported type, against gguf's numpy reference implementation."""
import time

import gguf.quants
import numpy as np
import pytest
import torch
from gguf.constants import GGMLQuantizationType as T

from gguf_synth import one_thread, random_blocks, write_gguf
from litevllm_gguf.dequant import SUPPORTED_TYPES, dequantize
from litevllm_gguf.format import GGUFFormat

BLOCK_TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K]
ROWS, COLS = 6, 512


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """One file holding a tensor of every supported type, plus the reference float values."""
    rng = np.random.default_rng(0)
    values = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    tensors, expected = {}, {}
    for i, ggml_type in enumerate(BLOCK_TYPES):
        blocks = random_blocks(ggml_type, ROWS, COLS, seed=i)
        tensors[f"{ggml_type.name}.weight"] = (blocks, ggml_type)
        expected[f"{ggml_type.name}.weight"] = gguf.quants.dequantize(blocks, ggml_type)
    tensors["F32.weight"] = (values, None)
    tensors["F16.weight"] = (values.astype(np.float16), None)
    tensors["BF16.weight"] = (gguf.quants.quantize(values, T.BF16), T.BF16)
    for name in ("F32", "F16", "BF16"):
        raw, raw_type = tensors[f"{name}.weight"]
        expected[f"{name}.weight"] = gguf.quants.dequantize(raw, raw_type or T[name])
    path = write_gguf(tmp_path_factory.mktemp("dequant") / "all.gguf", "synthetic", tensors)
    return path, expected


def test_every_supported_type_is_covered():
    assert set(SUPPORTED_TYPES) == {t.name for t in BLOCK_TYPES} | {"F32", "F16", "BF16"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dequant_matches_gguf_reference(synthetic, dtype):
    path, expected = synthetic
    got = dict(GGUFFormat(path).iter_tensors(dtype))
    assert set(got) == set(expected)
    for name, ref in expected.items():
        assert got[name].dtype == dtype and tuple(got[name].shape) == (ROWS, COLS), name
        ref = torch.from_numpy(np.ascontiguousarray(ref, dtype=np.float32))
        if dtype == torch.float32:
            torch.testing.assert_close(got[name], ref, rtol=1e-6, atol=1e-6, msg=name)
        else:  # one rounding of the exact float32 result
            torch.testing.assert_close(got[name], ref.to(dtype), rtol=0, atol=0, msg=name)


def test_dtype_none_keeps_stored_floats(synthetic):
    got = dict(GGUFFormat(synthetic[0]).iter_tensors(None))
    assert got["F16.weight"].dtype == torch.float16
    assert got["BF16.weight"].dtype == torch.bfloat16
    assert got["Q4_K.weight"].dtype == torch.float32


def test_dequant_is_vectorised():
    """A 4096 x 4096 Q4_K matrix (65k blocks) decodes in well under a second per call."""
    raw = torch.from_numpy(random_blocks(T.Q4_K, 4096, 4096).reshape(-1))
    with one_thread():
        dequantize(raw, T.Q4_K, (4096, 4096))  # warm-up
        start = time.perf_counter()
        dequantize(raw, T.Q4_K, (4096, 4096), torch.bfloat16)
        assert time.perf_counter() - start < 3.0
