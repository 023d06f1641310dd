"""Llama and Mistral against transformers, through the public conformance kit.

The Triton kernels are requested by name, so they are compared with transformers on every
machine (on a CPU through Triton's interpreter, which the kit starts itself when this process
has no TRITON_INTERPRET=1): a check that cannot run fails instead of being skipped."""
import pytest

from litevllm.testing import assert_architecture, assert_plugin, tiny_config

CASES = {
    "llama": ("LlamaForCausalLM", {}),
    "llama3-rope-tied": ("LlamaForCausalLM", dict(tie_word_embeddings=True, rope_parameters=dict(
        rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
        high_freq_factor=4.0, original_max_position_embeddings=16))),
    "mistral-sliding-window": ("MistralForCausalLM", dict(sliding_window=8)),
}


def test_plugin_registers_valid_models():
    assert_plugin("llama")


@pytest.mark.parametrize("case", list(CASES))
def test_matches_transformers(case, tmp_path):
    arch, overrides = CASES[case]
    report = assert_architecture(arch, tiny_config(arch, **overrides), tmp_path,
                                 kernels=["triton"])
    assert not report.skipped, report.table()
    assert "triton attention" in report.get("kernels=triton").reason
    assert int(report.get("prefix_caching").reason.split()[0]) > 0  # the cache was hit
