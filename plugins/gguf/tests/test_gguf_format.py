"""GGUFFormat on synthetic files: names, q/k un-permute, config, and bad input."""
import numpy as np
import pytest
import torch
from gguf.constants import GGMLQuantizationType as T

from gguf_synth import (TINY_LLAMA, random_blocks, tiny_llama_state_dict, write_gguf,
                        write_tiny_llama)
from litevllm.plugin_api import CheckpointError
from litevllm_gguf.arch import unpermute_rows
from litevllm_gguf.format import GGUFFormat


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    state = tiny_llama_state_dict()
    path = write_tiny_llama(tmp_path_factory.mktemp("llama") / "tiny.gguf", state)
    return path, state


def test_unpermute_inverts_llamacpp_permute():
    from gguf_synth import llamacpp_permute
    weight = torch.arange(24 * 3).reshape(24, 3)
    for heads in (1, 2, 3):
        assert torch.equal(llamacpp_permute(weight, heads)[unpermute_rows(24, heads)], weight)


def test_llama_tensors_equal_hf_weights(tiny_llama):
    path, state = tiny_llama
    got = dict(GGUFFormat(path).iter_tensors(torch.float32))
    assert set(got) == set(state)
    for name, weight in state.items():
        assert torch.equal(got[name], weight), name


def test_llama_config(tiny_llama):
    config = GGUFFormat(tiny_llama[0]).load_config()
    assert config.architectures == ["LlamaForCausalLM"]
    for key, value in TINY_LLAMA.items():
        if key != "rope_theta":
            assert getattr(config, key) == value, key
    assert config.head_dim == 16 and config.eos_token_id == 2
    assert config.rope_parameters["rope_theta"] == TINY_LLAMA["rope_theta"]


def test_requested_dtype(tiny_llama):
    for name, tensor in GGUFFormat(tiny_llama[0]).iter_tensors(torch.bfloat16):
        assert tensor.dtype == torch.bfloat16, name


def test_detect(tiny_llama, tmp_path):
    path = tiny_llama[0]
    assert GGUFFormat.detect(path) and GGUFFormat.detect(path.parent)
    assert not GGUFFormat.detect(tmp_path)  # empty directory
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "model.gguf").write_bytes(path.read_bytes())
    assert not GGUFFormat.detect(tmp_path)  # left to the safetensors format


def test_directory_with_two_files_is_an_error(tiny_llama, tmp_path):
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(tiny_llama[0].read_bytes())
    with pytest.raises(CheckpointError, match="exactly one .gguf file"):
        GGUFFormat(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.01, 10 / 1e9])
def test_truncated_file(tiny_llama, tmp_path, keep):
    data = tiny_llama[0].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:max(1, int(len(data) * keep))])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        GGUFFormat(cut)
    assert "\n" not in str(err.value)


def test_empty_and_foreign_files(tmp_path):
    empty, foreign = tmp_path / "empty.gguf", tmp_path / "foreign.gguf"
    empty.write_bytes(b"")
    foreign.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(CheckpointError, match="cannot read GGUF file"):
        GGUFFormat(empty)
    with pytest.raises(CheckpointError, match="magic"):
        GGUFFormat(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        GGUFFormat(tmp_path / "missing.gguf")


def test_unsupported_quant_type_is_named(tmp_path):
    block_bytes = 66  # IQ2_XXS: 256 values in 66 bytes
    tensors = {"token_embd.weight": (np.zeros((4, 256), np.float32), None),
               "blk.0.attn_q.weight": (np.zeros((4, block_bytes), np.uint8), T.IQ2_XXS)}
    path = write_gguf(tmp_path / "iq.gguf", "llama", tensors, {"llama.attention.head_count": 1})
    with pytest.raises(CheckpointError) as err:
        list(GGUFFormat(path).iter_tensors(torch.float32))
    message = str(err.value)
    assert "blk.0.attn_q.weight" in message and "IQ2_XXS" in message and "Q4_K" in message


def test_unknown_architecture_is_reported(tmp_path):
    tensors = {"token_embd.weight": (np.zeros((10, 8), np.float32), None),
               "blk.0.attn_q.weight": (np.ones((8, 8), np.float32), None),
               "blk.0.mystery.weight": (np.ones(8, np.float32), None)}
    path = write_gguf(tmp_path / "alien.gguf", "alienlm", tensors,
                      {"alienlm.block_count": 1, "alienlm.embedding_length": 8})
    fmt = GGUFFormat(path)
    config = fmt.load_config()
    assert config.architectures == ["alienlm"]
    assert config.num_hidden_layers == 1 and config.hidden_size == 8 and config.vocab_size == 10
    names = [name for name, _ in fmt.iter_tensors()]
    # generic names still map; unknown ones pass through untouched
    assert names == ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                     "blk.0.mystery.weight"]


def test_unknown_architecture_end_to_end(tmp_path):
    from litevllm import LLM
    from importlib.metadata import entry_points
    assert any(ep.value == "litevllm_gguf.plugin" for ep in entry_points(group="litevllm")), \
        "litevllm-plugin-gguf is not installed (pip install -e plugins/gguf)"
    tensors = {"token_embd.weight": (np.zeros((10, 8), np.float32), None)}
    path = write_gguf(tmp_path / "alien.gguf", "alienlm", tensors, {"alienlm.block_count": 1})
    with pytest.raises(Exception, match="alienlm"):
        LLM(model=str(path))


def test_quantized_qk_are_unpermuted_before_decoding(tmp_path):
    """Row reordering of raw blocks must equal reordering the decoded rows."""
    blocks = random_blocks(T.Q4_K, 8, 256)
    meta = {"llama.attention.head_count": 2, "llama.attention.head_count_kv": 2}
    plain = write_gguf(tmp_path / "plain.gguf", "synthetic", {"attn_q.weight": (blocks, T.Q4_K)})
    llama = write_gguf(tmp_path / "llama.gguf", "llama", {"blk.0.attn_q.weight": (blocks, T.Q4_K)}, meta)
    decoded = dict(GGUFFormat(plain).iter_tensors())["attn_q.weight"]
    got = dict(GGUFFormat(llama).iter_tensors())["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(got, decoded[unpermute_rows(8, 2)])


def test_gemma_norms_lose_llamacpp_offset(tmp_path):
    tensors = {"blk.0.attn_norm.weight": (np.full(4, 1.25, np.float32), None),
               "output_norm.weight": (np.full(4, 0.5, np.float32), None)}
    got = dict(GGUFFormat(write_gguf(tmp_path / "g.gguf", "gemma", tensors)).iter_tensors())
    assert torch.equal(got["model.layers.0.input_layernorm.weight"], torch.full((4,), 0.25))
    assert torch.equal(got["model.norm.weight"], torch.full((4,), -0.5))


def test_moe_experts_are_split(tmp_path):
    experts = np.arange(3 * 4 * 8, dtype=np.float32).reshape(3, 4, 8)  # (experts, out, in)
    tensors = {"blk.1.ffn_up_exps.weight": (experts, None),
               "blk.1.ffn_gate_inp_shexp.weight": (np.ones(8, np.float32), None)}
    got = dict(GGUFFormat(write_gguf(tmp_path / "m.gguf", "qwen2moe", tensors)).iter_tensors())
    for e in range(3):
        assert torch.equal(got[f"model.layers.1.mlp.experts.{e}.up_proj.weight"], torch.from_numpy(experts[e]))
    assert got["model.layers.1.mlp.shared_expert_gate.weight"].shape == (1, 8)


def test_llama3_rope_freqs_become_rope_parameters(tmp_path):
    """llama.cpp stores Llama 3.1+ rope scaling as per-frequency divisors; check against HF's llama3 rope."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    llama3 = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 8192}
    hf = LlamaConfig(hidden_size=128, num_attention_heads=2, max_position_embeddings=131072,
                     rope_theta=500000.0, rope_scaling=llama3)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](hf, "cpu")
    plain = 1.0 / 500000.0 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64)
    meta = {"llama.embedding_length": 128, "llama.attention.head_count": 2, "llama.block_count": 1,
            "llama.context_length": 131072, "llama.rope.freq_base": 500000.0}
    tensors = {"rope_freqs.weight": ((plain / scaled).numpy(), None)}
    fmt = GGUFFormat(write_gguf(tmp_path / "l3.gguf", "llama", tensors, meta))
    params = fmt.load_config().rope_parameters
    assert params["rope_type"] == "llama3" and params["rope_theta"] == 500000.0
    assert params["factor"] == pytest.approx(32.0)
    assert all(params[k] == v for k, v in llama3.items() if k != "factor")
    assert [name for name, _ in fmt.iter_tensors()] == []  # folded into the config, not a weight


@pytest.mark.parametrize("arch, hf_class", [
    ("qwen2", "Qwen2ForCausalLM"), ("qwen2moe", "Qwen2MoeForCausalLM"), ("qwen3", "Qwen3ForCausalLM"),
    ("qwen3moe", "Qwen3MoeForCausalLM"), ("gemma", "GemmaForCausalLM"), ("gemma2", "Gemma2ForCausalLM"),
    ("phi3", "Phi3ForCausalLM")])
def test_other_architectures_config(tmp_path, arch, hf_class):
    meta = {f"{arch}.{key}": value for key, value in {
        "block_count": 2, "embedding_length": 64, "feed_forward_length": 96, "context_length": 512,
        "attention.head_count": 4, "attention.head_count_kv": 2, "attention.key_length": 32,
        "attention.layer_norm_rms_epsilon": 1e-6, "rope.freq_base": 1e6, "expert_count": 4,
        "expert_used_count": 2, "expert_feed_forward_length": 48}.items()}
    meta.update({"tokenizer.ggml.padding_token_id": 0, "tokenizer.ggml.eos_token_id": 1})
    tensors = {"token_embd.weight": (np.zeros((50, 64), np.float32), None)}
    config = GGUFFormat(write_gguf(tmp_path / "m.gguf", arch, tensors, meta)).load_config()
    assert config.architectures == [hf_class] and config.tie_word_embeddings
    assert (config.num_hidden_layers, config.hidden_size, config.head_dim, config.vocab_size) == (2, 64, 32, 50)
    assert config.num_key_value_heads == 2 and config.rms_norm_eps == 1e-6


def test_mixtral_style_llama_is_refused(tmp_path):
    meta = {"llama.embedding_length": 64, "llama.attention.head_count": 4, "llama.expert_count": 8}
    fmt = GGUFFormat(write_gguf(tmp_path / "mx.gguf", "llama", {}, meta))
    with pytest.raises(CheckpointError, match="Mixtral-style"):
        fmt.load_config()
