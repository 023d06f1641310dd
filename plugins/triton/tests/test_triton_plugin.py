"""The hook module registers loadable targets whose signatures match the torch references."""
from litevllm.testing import assert_plugin, check_plugin


def test_plugin_conforms():
    report = assert_plugin("triton")
    assert report.ok


def test_registers_every_op_and_the_backend():
    from litevllm_triton import plugin
    seen = []
    plugin.register_ops(register=lambda name, target, **options: seen.append((name, options)))
    assert {name for name, _ in seen} == set(plugin.OPS)
    assert all(o["provider"] == "triton" and o["devices"] == ("cuda",) for _, o in seen)
    backends = []
    plugin.register_attention_backends(register=lambda name, target, **o: backends.append(target))
    assert backends == ["litevllm_triton.backend:TritonAttentionBackend"]
    from litevllm_triton.backend import TritonAttentionBackend
    assert TritonAttentionBackend.supports_cuda_graphs
    assert check_plugin("triton").ok
