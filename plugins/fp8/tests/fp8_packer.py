"""Writes tiny FP8 checkpoints in the on-disk layout of real ``quant_method: fp8`` checkpoints:
per linear layer ``weight`` float8_e4m3fn plus ``weight_scale`` (float32 scalar, per tensor) or
``weight_scale_inv`` (float32 [ceil(N/bn), ceil(K/bk)]), optionally ``input_scale``; everything
else (embeddings, norms, lm_head, ignored layers) unquantized. The transformers reference model
gets the dequantized weights in float32, so both sides run the same numbers."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from litevllm.testing import build_checkpoint, tiny_config

from litevllm_fp8 import reference as ref

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SIZES = dict(hidden_size=256, intermediate_size=320, num_attention_heads=4, num_key_value_heads=2,
             head_dim=64, vocab_size=160, max_position_embeddings=256, tie_word_embeddings=False)


def is_linear(name: str) -> bool:
    return name.endswith(".weight") and name.split(".")[-2] in LINEARS


def quant_config(block=None, static=False, ignored=()) -> dict:
    cfg = {"quant_method": "fp8", "activation_scheme": "static" if static else "dynamic"}
    if block:
        cfg["weight_block_size"] = list(block)
    if ignored:
        cfg["ignored_layers"] = list(ignored)
    return cfg


def dequantize(q: torch.Tensor, scale: torch.Tensor, block=None) -> torch.Tensor:
    """The format's meaning, written here independently of the plugin: ``q * scale`` with a
    scalar scale, or each [bn, bk] block of ``q`` times its ``scale_inv`` entry."""
    w = q.float()
    if block is None:
        return w * scale.float()
    out = torch.empty_like(w)
    bn, bk = block
    for i in range(scale.shape[0]):
        for j in range(scale.shape[1]):
            rows, cols = slice(i * bn, (i + 1) * bn), slice(j * bk, (j + 1) * bk)
            out[rows, cols] = w[rows, cols] * scale[i, j].float()
    return out


def reference_param(state: dict, name: str) -> torch.Tensor:
    """The transformers tensor holding checkpoint tensor ``name``: itself, or one expert's
    slice of the stacked ``experts.gate_up_proj`` [E, 2I, H] / ``experts.down_proj``."""
    if name in state:
        return state[name]
    m = re.match(r"(.*\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$", name)
    e, proj = int(m.group(2)), m.group(3)
    if proj == "down":
        return state[f"{m.group(1)}.down_proj"][e]
    stacked = state[f"{m.group(1)}.gate_up_proj"][e]
    half = stacked.shape[0] // 2
    return stacked[:half] if proj == "gate" else stacked[half:]


def write_fp8_checkpoint(path: Path, block=None, static=False, ignored=(), arch="LlamaForCausalLM",
                         seed=0, **overrides):
    """Build a random tiny HF model, write its FP8 checkpoint to ``path``, and return the
    float32 HF model holding the dequantized weights (the reference)."""
    from safetensors.torch import load_file
    path = Path(path)
    hf = build_checkpoint(arch, tiny_config(arch, **{**SIZES, **overrides}), path / "orig", seed)
    tensors = {}
    state = hf.state_dict()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # the saved tensors: one per expert, as real checkpoints
        for name, w in load_file(str(path / "orig" / "model.safetensors")).items():
            module = name.rsplit(".", 1)[0]
            if not is_linear(name) or any(f".{e}." in f".{module}." for e in ignored):
                tensors[name] = w.contiguous()
                continue
            stem = name[: -len("weight")]
            if block:
                q, scale = ref.quantize_blocks(w, *block)
                tensors[stem + "weight_scale_inv"] = scale
            else:
                q, scale = ref.quantize_tensor(w)
                tensors[stem + "weight_scale"] = scale.reshape(())
            if static:
                tensors[stem + "input_scale"] = torch.rand((), generator=gen) * 0.01 + 0.001
            tensors[stem + "weight"] = q
            # the reference runs the dequantized weights
            reference_param(state, name).copy_(dequantize(q, scale, block))
    save_file(tensors, str(path / "model.safetensors"))
    config = json.loads((path / "orig" / "config.json").read_text())
    config["quantization_config"] = quant_config(block, static, ignored)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return hf


def rewrite(path: Path, out: Path, edit) -> Path:
    """Copy the checkpoint at ``path`` to ``out`` with ``edit(tensors, config)`` applied."""
    from safetensors.torch import load_file
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(path / "model.safetensors"))
    config = json.loads((path / "config.json").read_text())
    edit(tensors, config)
    save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out
