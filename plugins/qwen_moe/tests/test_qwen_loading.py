"""Loading per-expert checkpoint tensors into the stacked expert weights, and bad checkpoints."""
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from litevllm import LLM, SamplingParams
from litevllm.plugin_api import CheckpointError, route_expert_tensor
from qwen_test_utils import save_hf


def engine_model(path):
    return LLM(str(path), device="cpu", dtype="float32", block_size=8).engine.model


def rewrite(path, fn):
    """Apply ``fn`` to the checkpoint's {name: tensor} and save it back."""
    file = path / "model.safetensors"
    tensors = load_file(file)
    save_file(fn(tensors), file, metadata={"format": "pt"})


def test_experts_load_into_stacked_slices(tmp_path):
    hf = save_hf("qwen2-moe-mlp-only", tmp_path)
    experts = engine_model(tmp_path).model.layers[1].mlp.experts
    ref = hf.model.layers[1].mlp.experts  # transformers 5 stacks them the same way
    assert experts.w13.shape == (8, 64, 64) and experts.w2.shape == (8, 64, 32)
    torch.testing.assert_close(experts.w13, ref.gate_up_proj, rtol=0, atol=0)
    torch.testing.assert_close(experts.w2, ref.down_proj, rtol=0, atol=0)


def test_router_packs_the_shared_gate_row_and_zero_padding(tmp_path):
    hf = save_hf("qwen2-moe-mlp-only", tmp_path)
    moe, ref = engine_model(tmp_path).model.layers[1].mlp, hf.model.layers[1].mlp
    w = moe.gate.weight  # 8 experts + the shared gate + 7 padding rows (a multiple of 8)
    assert w.shape == (16, ref.gate.weight.shape[1])
    torch.testing.assert_close(w[:8], ref.gate.weight, rtol=0, atol=0)
    torch.testing.assert_close(w[8:9], ref.shared_expert_gate.weight, rtol=0, atol=0)
    assert not w[9:].any()


def test_folded_shared_expert_loads_into_the_last_experts(tmp_path):
    hf = save_hf("qwen2-moe-folded", tmp_path)
    experts, ref = engine_model(tmp_path).model.layers[1].mlp.experts, hf.model.layers[1].mlp
    gate, up = ref.shared_expert.gate_proj.weight, ref.shared_expert.up_proj.weight  # [64, 64]
    down = ref.shared_expert.down_proj.weight  # [64, 64]: hidden x 2 experts' 32 columns
    for i in range(2):
        rows = slice(32 * i, 32 * (i + 1))
        torch.testing.assert_close(experts.w13[8 + i], torch.cat([gate[rows], up[rows]]),
                                   rtol=0, atol=0)
        torch.testing.assert_close(experts.w2[8 + i], down[:, rows], rtol=0, atol=0)
    torch.testing.assert_close(experts.w13[:8], ref.experts.gate_up_proj, rtol=0, atol=0)


def test_missing_folded_shared_expert_tensor_is_named(tmp_path):
    save_hf("qwen2-moe-folded", tmp_path)
    name = "model.layers.2.mlp.shared_expert.down_proj.weight"
    rewrite(tmp_path, lambda t: {k: v for k, v in t.items() if k != name})
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        engine_model(tmp_path)


def test_missing_expert_tensor_is_named(tmp_path):
    save_hf("qwen2-moe-mlp-only", tmp_path)
    rewrite(tmp_path, lambda t: {k: v for k, v in t.items()
                                 if k != "model.layers.1.mlp.experts.3.up_proj.weight"})
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.experts\.3\.up_proj\.weight"):
        engine_model(tmp_path)


def test_wrong_expert_shape_is_named(tmp_path):
    save_hf("qwen3-moe", tmp_path)
    name = "model.layers.0.mlp.experts.5.down_proj.weight"
    rewrite(tmp_path, lambda t: {**t, name: t[name][:, :-1].contiguous()})
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        engine_model(tmp_path)


@pytest.mark.parametrize("variant", ["qwen3-moe", "qwen2-moe-folded"])
def test_stacked_expert_layout_loads_too(tmp_path, variant):
    """Checkpoints already stacked over experts (``mlp.experts.gate_up_proj`` [E, 2I, H],
    ``mlp.experts.down_proj`` [E, H, I]) give the same model, a folded shared expert too (its
    slices come from its own tensors, which must still be there)."""
    hf = save_hf(variant, tmp_path / "per-expert")
    save_hf(variant, tmp_path / "stacked")

    def stack(t):
        out = {k: v for k, v in t.items() if ".experts." not in k}
        for i, layer in enumerate(hf.model.layers):
            if hasattr(layer.mlp, "experts"):
                out[f"model.layers.{i}.mlp.experts.gate_up_proj"] = layer.mlp.experts.gate_up_proj.data
                out[f"model.layers.{i}.mlp.experts.down_proj"] = layer.mlp.experts.down_proj.data
        return out
    rewrite(tmp_path / "stacked", stack)
    params = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
    prompt = {"prompt_token_ids": [3, 1, 4, 1, 5, 9, 2, 6]}
    a, b = (LLM(str(tmp_path / d), device="cpu", dtype="float32", block_size=8)
            .generate(prompt, params)[0].outputs[0].token_ids for d in ("per-expert", "stacked"))
    assert a == b
    if variant == "qwen2-moe-folded":
        name = "model.layers.0.mlp.shared_expert.up_proj.weight"
        rewrite(tmp_path / "stacked", lambda t: {k: v for k, v in t.items() if k != name})
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            engine_model(tmp_path / "stacked")


def test_route_expert_tensor():
    assert route_expert_tensor("model.layers.1.mlp.experts.3.up_proj", "weight") == \
        ("model.layers.1.mlp.experts", "w13", (3, 1))
    assert route_expert_tensor("m.block_sparse_moe.experts.0.w2", "weight") == \
        ("m.block_sparse_moe.experts", "w2", (0, 0))
    assert route_expert_tensor("model.layers.0.mlp.experts", "gate_up_proj") == \
        ("model.layers.0.mlp.experts", "w13", None)
    assert route_expert_tensor("model.layers.0.mlp.shared_expert.up_proj", "weight") is None
    assert route_expert_tensor("model.layers.0.mlp.gate", "weight") is None


def test_sliding_window_rule_for_old_configs():
    """transformers 4 kept sliding_window in the config even with use_sliding_window false."""
    from litevllm_qwen.qwen2 import qwen_sliding_window
    off = SimpleNamespace(sliding_window=4096, use_sliding_window=False, max_window_layers=2)
    on = SimpleNamespace(sliding_window=4096, use_sliding_window=True, max_window_layers=2)
    assert [qwen_sliding_window(off, i) for i in range(4)] == [None] * 4
    assert [qwen_sliding_window(on, i) for i in range(4)] == [None, None, 4096, 4096]
