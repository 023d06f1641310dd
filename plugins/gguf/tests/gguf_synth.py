"""Helpers that write small synthetic GGUF files with gguf.GGUFWriter."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from gguf import GGUFWriter
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T

# where each block type keeps its fp16 scales (random bytes there could be inf/nan)
SCALE_OFFSETS = {T.Q4_0: (0,), T.Q4_1: (0, 2), T.Q5_0: (0,), T.Q5_1: (0, 2), T.Q8_0: (0,),
                 T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}


def random_blocks(ggml_type: T, rows: int, cols: int, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    """(rows, row_bytes) uint8: random quantized blocks with fp16 scales in [-scale, scale]."""
    rng = np.random.default_rng(seed)
    block_size, block_bytes = GGML_QUANT_SIZES[ggml_type]
    blocks = rng.integers(0, 256, (rows * cols // block_size, block_bytes), dtype=np.uint8)
    for at in SCALE_OFFSETS[ggml_type]:
        scales = rng.uniform(-scale, scale, len(blocks)).astype(np.float16)
        blocks[:, at:at + 2] = scales.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, -1)


def write_gguf(path: Path, arch: str, tensors: dict[str, tuple[np.ndarray, T | None]],
               metadata: dict | None = None) -> Path:
    """Write ``{name: (array, raw_type or None)}`` plus ``{key: value}`` metadata."""
    writer = GGUFWriter(str(path), arch)
    for key, value in (metadata or {}).items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_string(key, value)
    for name, (array, raw_type) in tensors.items():
        writer.add_tensor(name, array, raw_dtype=raw_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def llamacpp_permute(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp's convert_hf_to_gguf q/k permutation (HF rotate-half → interleaved pairs)."""
    return (weight.reshape(n_heads, 2, weight.shape[0] // n_heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


TINY_LLAMA = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)

_HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}


def hf_to_gguf_name(hf_name: str) -> str:
    globals_ = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                "lm_head.weight": "output.weight"}
    if hf_name in globals_:
        return globals_[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{_HF_TO_GGUF[module]}.{kind}"


def write_tiny_llama(path: Path, state_dict: dict[str, torch.Tensor], arch: str = "llama") -> Path:
    """Convert a tiny HF llama state dict the way llama.cpp does (F32, permuted q/k)."""
    c = TINY_LLAMA
    tensors = {}
    for name, weight in state_dict.items():
        if name.endswith("q_proj.weight"):
            weight = llamacpp_permute(weight, c["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            weight = llamacpp_permute(weight, c["num_key_value_heads"])
        tensors[hf_to_gguf_name(name)] = (weight.float().numpy(), None)
    return write_gguf(path, arch, tensors, llama_metadata(c, arch))


def llama_metadata(c: dict, arch: str = "llama") -> dict:
    """GGUF metadata for an HF-style llama config dict."""
    return {
        f"{arch}.context_length": c["max_position_embeddings"],
        f"{arch}.embedding_length": c["hidden_size"],
        f"{arch}.block_count": c["num_hidden_layers"],
        f"{arch}.feed_forward_length": c["intermediate_size"],
        f"{arch}.attention.head_count": c["num_attention_heads"],
        f"{arch}.attention.head_count_kv": c["num_key_value_heads"],
        f"{arch}.attention.layer_norm_rms_epsilon": c["rms_norm_eps"],
        f"{arch}.rope.freq_base": c["rope_theta"],
        f"{arch}.rope.dimension_count": c["hidden_size"] // c["num_attention_heads"],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }


# fp16 scale ranges that keep each type's weights near 1/sqrt(256) (6-bit K-quant sub-scales
# and Q6_K's int8 scales multiply in)
WEIGHT_SCALES = {T.Q4_0: 8e-3, T.Q4_1: 8e-3, T.Q5_0: 4e-3, T.Q5_1: 4e-3, T.Q8_0: 5e-4,
                 T.Q4_K: 3e-4, T.Q5_K: 1.5e-4, T.Q6_K: 4e-5}


def write_quantized_llama(path: Path, config: dict, types: dict[str, T | None], seed: int = 0,
                          metadata: dict | None = None) -> Path:
    """A llama GGUF of random weights: ``types`` maps GGUF tensor names (``blk.0.attn_q.weight``)
    to a block type; the rest (norms, embeddings) are F32, or F16 where the type is None.
    ``metadata`` overrides what ``config`` says."""
    rng = np.random.default_rng(seed)
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    shapes = {"token_embd": (v, h), "output_norm": (h,), "output": (v, h)}
    for layer in range(config["num_hidden_layers"]):
        shapes.update({f"blk.{layer}.{k}": s for k, s in {
            "attn_norm": (h,), "ffn_norm": (h,), "attn_q": (h, h), "attn_k": (kv, h), "attn_v": (kv, h),
            "attn_output": (h, h), "ffn_gate": (i, h), "ffn_up": (i, h), "ffn_down": (h, i)}.items()})
    tensors = {}
    for n, (base, shape) in enumerate(shapes.items()):
        name = f"{base}.weight"
        if name in types and types[name] is not None:
            ggml_type = types[name]
            tensors[name] = (random_blocks(ggml_type, *shape, seed=seed + n, scale=WEIGHT_SCALES[ggml_type]),
                             ggml_type)
            continue
        values = (rng.uniform(0.5, 1.5, shape) if len(shape) == 1 else
                  rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
        tensors[name] = (values.astype(np.float16) if name in types else values, None)
    return write_gguf(path, "llama", tensors, {**llama_metadata(config), **(metadata or {})})
    return write_gguf(path, arch, tensors, metadata)


def tiny_llama_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name in state:  # norms are ones at init; make them distinguishable
        if "norm" in name:
            state[name] = torch.rand_like(state[name]) + 0.5
    return state


@contextmanager
def one_thread():
    """Time with one intra-op thread: on a small shared CI box, OpenMP threads waiting for a busy
    core make a run 10-40x slower than it really is; one thread measures the work itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
