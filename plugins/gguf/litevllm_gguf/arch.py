"""GGUF architectures → Hugging Face: model class, config fields and tensor names."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Arch:
    hf_class: str
    model_type: str
    permute_qk: bool = False  # llama.cpp permuted q/k rows into its interleaved rope layout
    norm_offset: float = 0.0  # llama.cpp stored RMSNorm weights as w + norm_offset
    renames: dict[str, str] = field(default_factory=dict)  # per-arch overrides of BLOCK_TENSORS
    config_defaults: dict = field(default_factory=dict)  # what llama.cpp assumes but doesn't store


_GEMMA2_NORMS = {
    "attn_post_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}

# Mistral GGUFs say "llama" too; llama.cpp keeps no sliding window for them, so
# LlamaForCausalLM is the faithful reading.
ARCHITECTURES = {
    "llama": Arch("LlamaForCausalLM", "llama", permute_qk=True),
    "qwen2": Arch("Qwen2ForCausalLM", "qwen2"),
    "qwen2moe": Arch("Qwen2MoeForCausalLM", "qwen2_moe"),
    "qwen3": Arch("Qwen3ForCausalLM", "qwen3"),
    "qwen3moe": Arch("Qwen3MoeForCausalLM", "qwen3_moe", config_defaults={"norm_topk_prob": True}),
    "gemma": Arch("GemmaForCausalLM", "gemma", norm_offset=1.0),
    "gemma2": Arch("Gemma2ForCausalLM", "gemma2", norm_offset=1.0, renames=_GEMMA2_NORMS),
    "phi3": Arch("Phi3ForCausalLM", "phi3", renames={"ffn_up": "mlp.gate_up_proj"}),
}

# `{arch}.<key>` metadata → HF config field
CONFIG_KEYS = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "attention.sliding_window": "sliding_window",
    "rope.freq_base": "rope_theta",
    "expert_count": "num_experts",
    "expert_used_count": "num_experts_per_tok",
    "expert_feed_forward_length": "moe_intermediate_size",
    "expert_shared_feed_forward_length": "shared_expert_intermediate_size",
    "attn_logit_softcapping": "attn_logit_softcapping",
    "final_logit_softcapping": "final_logit_softcapping",
}
TOKEN_ID_KEYS = {
    "tokenizer.ggml.bos_token_id": "bos_token_id",
    "tokenizer.ggml.eos_token_id": "eos_token_id",
    "tokenizer.ggml.padding_token_id": "pad_token_id",
}

GLOBAL_TENSORS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
BLOCK_TENSORS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_qkv": "self_attn.qkv_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_gate_inp": "mlp.gate",  # MoE router
    "ffn_gate_inp_shexp": "mlp.shared_expert_gate",
    "ffn_gate_shexp": "mlp.shared_expert.gate_proj",
    "ffn_up_shexp": "mlp.shared_expert.up_proj",
    "ffn_down_shexp": "mlp.shared_expert.down_proj",
}
# weights of the model's linear layers (LiteLinear), handed over as stored when kept packed
LINEAR_TENSORS = {"attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output", "ffn_gate", "ffn_up",
                  "ffn_down", "ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp"}
# stacked (n_experts, out, in) tensors, split into one HF tensor per expert
EXPERT_TENSORS = {"ffn_gate_exps": "gate_proj", "ffn_up_exps": "up_proj", "ffn_down_exps": "down_proj"}
# folded into the config instead of loaded as weights
CONFIG_TENSORS = {"rope_freqs", "rope_factors_long", "rope_factors_short"}

_NAME = re.compile(r"(?:blk\.(?P<layer>\d+)\.)?(?P<base>\w+)\.(?P<kind>weight|bias)")


def split_name(gguf_name: str) -> tuple[int | None, str, str] | None:
    """``blk.3.attn_q.weight`` → (3, "attn_q", "weight"); ``output.weight`` → (None, "output", "weight")."""
    match = _NAME.fullmatch(gguf_name)
    if match is None:
        return None
    layer = match["layer"]
    return (int(layer) if layer is not None else None), match["base"], match["kind"]


def hf_tensor_name(arch: Arch | None, layer: int | None, base: str, kind: str) -> str | None:
    """The HF name for a GGUF tensor, or None when there is no mapping."""
    if layer is None:
        hf = GLOBAL_TENSORS.get(base)
        return f"{hf}.{kind}" if hf else None
    renames = arch.renames if arch else {}
    hf = renames.get(base) or BLOCK_TENSORS.get(base)
    return f"model.layers.{layer}.{hf}.{kind}" if hf else None


def unpermute_rows(n_rows: int, n_heads: int) -> torch.Tensor:
    """Row order that undoes llama.cpp's q/k permutation: per head, llama.cpp interleaved the two
    rotary halves (rows 0, d/2, 1, d/2+1, ...); HF keeps them as two contiguous halves."""
    head_dim = n_rows // n_heads
    return torch.arange(n_rows).reshape(n_heads, head_dim // 2, 2).transpose(1, 2).reshape(-1)


def llama3_rope_scaling(factors: torch.Tensor, rope_theta: float, head_dim: int) -> dict | None:
    """Recover HF's ``rope_type: llama3`` parameters from the ``rope_freqs`` tensor llama.cpp wrote
    for Llama 3.1+ (one divisor per rotary frequency). None if the factors don't fit that scheme."""
    factor = float(factors.max())
    params = {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    old_context = params["original_max_position_embeddings"]
    expected = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * rope_theta ** (i / head_dim)
        if wavelen < old_context / params["high_freq_factor"]:
            expected.append(1.0)
        elif wavelen > old_context / params["low_freq_factor"]:
            expected.append(factor)
        else:
            smooth = (old_context / wavelen - 1.0) / (4.0 - 1.0)
            expected.append(1 / ((1 - smooth) / factor + smooth))
    if len(expected) != factors.numel() or not torch.allclose(factors.float(), torch.tensor(expected), rtol=1e-3):
        return None
    return params
