"""GPTQ int4 experts (Qwen2-MoE layout: experts.<e>.{gate,up,down}_proj.*) vs transformers on
the same dequantized weights; the router gates stay dense."""
import pytest
import torch

from quant_ckpt import VOCAB, assert_matches_hf, generate, random_init, save_quantized

SIZES = dict(hidden_size=128, intermediate_size=256, moe_intermediate_size=64,
             shared_expert_intermediate_size=128, num_experts=8, num_experts_per_tok=2,
             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=256, tie_word_embeddings=False, bos_token_id=1,
             eos_token_id=2, norm_topk_prob=False)


def make_gptq_qwen_moe(path, seed=0, **kw):
    import transformers
    from safetensors.torch import load_file
    cfg = transformers.Qwen2MoeConfig(vocab_size=VOCAB, **SIZES)
    model = random_init(transformers.Qwen2MoeForCausalLM(cfg), seed)
    float_dir = path.parent / (path.name + "-float")
    model.save_pretrained(float_dir)
    tensors = load_file(str(float_dir / "model.safetensors"))  # per-expert names on disk
    names = [n[:-len(".weight")] for n in tensors if n.endswith("proj.weight")
             and ".layers." in n]
    deq = save_quantized(tensors, cfg, "Qwen2MoeForCausalLM", path, names, "gptq", seed=seed,
                         **kw)
    # the reference: the float checkpoint with every quantized weight dequantized
    ref = load_file(str(float_dir / "model.safetensors"))
    ref.update({f"{n}.weight": w for n, w in deq.items()})
    from safetensors.torch import save_file
    save_file(ref, str(float_dir / "model.safetensors"))
    return transformers.Qwen2MoeForCausalLM.from_pretrained(float_dir, dtype=torch.float32).eval()


@pytest.mark.parametrize("kw", [dict(group_size=32, sym=False),
                                dict(group_size=64, sym=True, desc_act=True)],
                         ids=["asym-g32", "sym-g64-desc"])
def test_gptq_moe_matches_hf(kw, models_dir):
    path = models_dir / f"qwen-moe-{kw['group_size']}"
    hf = make_gptq_qwen_moe(path, **kw)
    outs = generate(path)
    assert_matches_hf(outs, hf)
    from litevllm import LLM
    moe = LLM(str(path), block_size=8).engine.model.model.layers[0].mlp
    assert moe.experts.w13_packed.qweight.shape == (8, 128 // 8, 128)
    assert moe.gate.weight.shape == (16, 128)  # the router (+ shared gate, padding) stays dense
