"""GPTQ checkpoints (exact on-disk layout) vs transformers on the same dequantized weights."""
import pytest

from quant_ckpt import VOCAB, assert_matches_hf, generate, make_quant_llama

CASES = {
    "v1-sym-g128": dict(bits=4, group_size=128, sym=True),
    "v1-asym-g32-desc": dict(bits=4, group_size=32, sym=False, desc_act=True),
    "v2-asym-g64": dict(bits=4, group_size=64, sym=False, checkpoint_format="gptq_v2"),
    "v1-sym-channel-desc": dict(bits=4, group_size=-1, sym=True, desc_act=True),
    "8bit-asym-g32": dict(bits=8, group_size=32, sym=False),
    "8bit-sym-v2-desc": dict(bits=8, group_size=64, sym=True, desc_act=True,
                             checkpoint_format="gptq_v2"),
    "skip-down": dict(bits=4, group_size=64, sym=False, skip=("mlp.down_proj",)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gptq_matches_hf(case, models_dir):
    path = models_dir / f"gptq-{case}"
    hf = make_quant_llama(path, VOCAB, "gptq", **CASES[case])
    assert_matches_hf(generate(path), hf)


def test_dummy_weights_give_random_codes(models_dir):
    """load_format='dummy' on a quantized config: random packed codes, not all-zero weights."""
    from litevllm import LLM, SamplingParams
    path = models_dir / "gptq-dummy"
    make_quant_llama(path, VOCAB, "gptq", group_size=64, sym=False)
    llm = LLM(str(path), load_format="dummy", block_size=8)
    packed = llm.engine.model.model.layers[0].mlp.gate_up_proj.packed
    codes = packed.qweight
    assert codes.dtype.is_floating_point is False and (codes != 0).float().mean() > 0.9
    assert packed.bias is not None and len(set(codes.flatten()[:64].tolist())) > 32
    out = llm.generate({"prompt_token_ids": [1, 2, 3]}, SamplingParams(max_tokens=3, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 3
