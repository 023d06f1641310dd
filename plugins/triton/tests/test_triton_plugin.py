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


def test_llama_with_head_dim_48_matches_transformers(tmp_path):
    """A head dim off the power-of-2 grid end to end: LLM(kernels="triton") in the interpreter
    against transformers (the conformance checks include kernels=triton here)."""
    from litevllm.testing import check_architecture, tiny_config
    config = tiny_config("LlamaForCausalLM", head_dim=48)
    report = check_architecture("LlamaForCausalLM", config, tmp_path)
    report.assert_ok()
    assert any(c.name == "kernels=triton" and c.status == "PASS" for c in report.checks)
