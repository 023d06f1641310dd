"""The hook module registers loadable targets whose signatures match the torch references."""
import inspect

from litevllm.ops import torch_ops
from litevllm.plugin_api import AttentionBackend
from litevllm.plugins import Entry, _api_compatible
from litevllm_triton import plugin


def _registrations():
    seen = []

    def register(name, target, **options):
        seen.append((name, target, options))

    plugin.register_ops(register=register)
    ops = list(seen)
    seen.clear()
    plugin.register_attention_backends(register=register)
    return ops, list(seen)


def test_plugin_registrations_load():
    assert _api_compatible(plugin.PLUGIN_API_VERSION)
    ops, backends = _registrations()
    assert {name for name, _, _ in ops} == set(plugin.OPS)
    for name, target, options in ops:
        fn = Entry("ops", name, target, "triton").load()
        assert options["provider"] == "triton" and options["devices"] == ("cuda",)
        assert inspect.signature(fn).parameters.keys() == \
            inspect.signature(getattr(torch_ops, name)).parameters.keys()
    [(name, target, options)] = backends
    cls = Entry("attention_backends", name, target, "triton").load()
    assert name == cls.name == "triton" and issubclass(cls, AttentionBackend)
    assert cls.supports_cuda_graphs
