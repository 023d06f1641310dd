"""HF parity for Phi-3 on the CPU, through the public conformance kit.

Run after installing the plugin: ``pip install -e . && pytest tests``.
"""
import pytest

from litevllm import LLM
from litevllm.testing import assert_architecture, assert_plugin, build_checkpoint, \
    conformance_configs, tiny_config
from litevllm_phi3.model import Phi3ForCausalLM

ARCH = "Phi3ForCausalLM"
CONFIGS = conformance_configs(ARCH, Phi3ForCausalLM)


def test_plugin_is_installed_and_valid():
    assert_plugin("phi3")


@pytest.mark.parametrize("config", CONFIGS, ids=["default", "partial-rotary-sliding-tied"])
def test_matches_transformers(config, tmp_path):
    assert_architecture(ARCH, config, tmp_path)


def test_longrope_is_refused_clearly(tmp_path):
    half = 16 * 1 // 2  # head_dim 16 -> 8 rotary frequencies
    config = tiny_config(ARCH, original_max_position_embeddings=64, rope_parameters={
        "rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0] * half,
        "long_factor": [2.0] * half, "partial_rotary_factor": 1.0})
    build_checkpoint(ARCH, config, tmp_path)
    with pytest.raises(ValueError, match="rope_type 'longrope' is not supported"):
        LLM(str(tmp_path), device="cpu")
