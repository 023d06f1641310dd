import pytest
import torch

from litevllm.plugin_api import torch_ops as ref
from litevllm_triton import kernels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("block_size,hkv,d", [(16, 2, 32), (8, 1, 64), (4, 3, 16)])
def test_reshape_and_cache(dtype, block_size, hkv, d):
    num_blocks, t = 12, 20
    k_cache = torch.randn(num_blocks, block_size, hkv, d, dtype=dtype)
    v_cache = torch.randn_like(k_cache)
    slots = torch.randperm(num_blocks * block_size)[:t]
    slots[::5] = -1  # padding tokens
    key = torch.randn(t, hkv, d, dtype=dtype)
    value = torch.randn(t, hkv, d, dtype=dtype)
    want_k, want_v = k_cache.clone(), v_cache.clone()
    ref.reshape_and_cache(key, value, want_k, want_v, slots)
    kernels.reshape_and_cache(key, value, k_cache, v_cache, slots)
    torch.testing.assert_close(k_cache, want_k, rtol=0, atol=0)
    torch.testing.assert_close(v_cache, want_v, rtol=0, atol=0)


def test_reshape_and_cache_strided_views_and_cast():
    t, hkv, d = 6, 2, 16
    kv = torch.randn(t, 2 * hkv * d)
    key, value = (x.view(t, hkv, d) for x in kv.split(hkv * d, dim=-1))
    cache = torch.randn(2, 4, 8, hkv, d, dtype=torch.float16)
    want = cache.clone()
    slots = torch.tensor([3, 9, -1, 31, 0, 17])
    ref.reshape_and_cache(key, value, want[0], want[1], slots)
    kernels.reshape_and_cache(key, value, cache[0], cache[1], slots)
    torch.testing.assert_close(cache, want, rtol=0, atol=0)


def test_reshape_and_cache_errors():
    cache = torch.zeros(2, 4, 8, 2, 16)
    key = torch.randn(3, 2, 16)
    with pytest.raises(ValueError, match="slot_mapping"):
        kernels.reshape_and_cache(key, key, cache[0], cache[1], torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="heads/dim"):
        kernels.reshape_and_cache(key[:, :1], key[:, :1], cache[0], cache[1],
                                  torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="power of 2"):
        c = torch.zeros(2, 4, 6, 2, 16)
        kernels.reshape_and_cache(key, key, c[0], c[1], torch.zeros(3, dtype=torch.int64))
