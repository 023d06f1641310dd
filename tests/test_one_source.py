"""Definitions with one source: activation names resolved once in core, kernel names checked."""
import pytest

from litevllm.model.layers import canonical_activation
from litevllm.ops import pick_attention_backend
from litevllm.ops.torch_ops import fused_moe
from litevllm.plugins import PluginError, get_plugin_manager


@pytest.mark.parametrize("name, canonical", [("silu", "silu"), ("swish", "silu"),
                                             ("gelu_pytorch_tanh", "gelu_tanh"),
                                             ("gelu_tanh", "gelu_tanh")])
def test_activation_names(name, canonical):
    assert canonical_activation(name) == canonical


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="activation 'relu2' is not supported"):
        canonical_activation("relu2")
    import torch
    with pytest.raises(ValueError, match="activation 'relu' is not supported"):
        fused_moe(torch.zeros(1, 4), torch.zeros(2, 8, 4), torch.zeros(2, 4, 4), torch.zeros(1, 2),
                  1, True, "relu")


def test_unknown_attention_backend_is_an_error():
    manager = get_plugin_manager()
    with pytest.raises(PluginError, match="unknown attention backend or kernel provider 'nope'"):
        pick_attention_backend(manager, "nope", "cpu")
    assert pick_attention_backend(manager, "torch", "cpu").name == "torch"


def test_engine_lookups_go_through_the_kind_table(llama_dir, monkeypatch):
    """The engine resolves every registered name by the selector its kind's row names."""
    import importlib

    from litevllm import LLM, SamplingParams
    from litevllm.kinds import KIND_TABLE
    calls = []
    for selector in {k.selector for k in KIND_TABLE.values()}:
        module, _, attr = selector.partition(":")
        mod = importlib.import_module(module)

        def spy(manager, kind, name, *args, _real=getattr(mod, attr), **context):
            calls.append(kind)
            return _real(manager, kind, name, *args, **context)
        monkeypatch.setattr(mod, attr, spy)
    llm = LLM(str(llama_dir), block_size=8, max_num_seqs=2)
    llm.generate({"prompt_token_ids": [5, 6]}, SamplingParams(max_tokens=1))
    assert {"checkpoint_formats", "models", "quant_methods", "attention_backends", "ops"} \
        <= set(calls)
