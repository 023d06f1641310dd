"""The real-size benchmark configs build, on the meta device, the same tensors as transformers."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from litevllm.testing import expected_tensors, model_class, model_context
from litevllm_gemma.gemma2 import is_sliding

CONFIGS = Path(__file__).resolve().parents[3] / "benchmarks" / "configs"
# name: (architecture, parameters in billions)
EXPECTED = {"gemma-2b": ("GemmaForCausalLM", 2.506), "gemma-2-2b": ("Gemma2ForCausalLM", 2.614),
            "gemma-2-9b": ("Gemma2ForCausalLM", 9.242)}


def meta_model(config):
    ctx = model_context("meta", torch.bfloat16, max_model_len=64)
    with torch.device("meta"):
        return model_class(config.architectures[0])(config, ctx)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_benchmark_config(name):
    config = AutoConfig.from_pretrained(CONFIGS / name)
    arch, billions = EXPECTED[name]
    assert config.architectures == [arch] and config.tie_word_embeddings
    ours = meta_model(config)
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(config)
    hf_names = set(hf.state_dict()) - {"lm_head.weight"}  # tied
    assert set(expected_tensors(ours).values()) == hf_names
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in hf.parameters())
    assert count / 1e9 == pytest.approx(billions, abs=5e-3)
    spec = ours.model.layers[0].self_attn.spec
    assert spec.head_dim == 256
    if arch == "Gemma2ForCausalLM":
        assert (spec.scale, spec.logit_softcap) == (256 ** -0.5, 50.0)
        assert ours.final_logit_softcap == 30.0
        windows = [layer.self_attn.spec.sliding_window for layer in ours.model.layers]
        assert windows[:4] == [4096, None, 4096, None]


def test_sliding_layers_without_layer_types():
    """Configs from before transformers 5 have no layer_types: even layers slide."""
    old = SimpleNamespace(num_hidden_layers=4)
    assert [is_sliding(old, i) for i in range(4)] == [True, False, True, False]
    new = SimpleNamespace(layer_types=["full_attention", "sliding_attention"])
    assert [is_sliding(new, i) for i in range(2)] == [False, True]


@pytest.mark.parametrize("arch", ["GemmaForCausalLM", "Gemma2ForCausalLM"])
def test_dummy_weights_give_unit_norm_scales(arch, tmp_path):
    """Gemma norms compute (1 + weight): dummy loading fills them with 0, Llama's with 1."""
    from litevllm import LLM
    from litevllm.testing import build_checkpoint, tiny_config
    build_checkpoint(arch, tiny_config(arch), tmp_path, 0)
    model = LLM(str(tmp_path), load_format="dummy").engine.model
    norms = [p for n, p in model.named_parameters() if "norm" in n and p.dim() == 1]
    assert norms and all(bool((p == 0).all()) for p in norms)
