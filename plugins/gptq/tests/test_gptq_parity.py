"""GPTQ and AWQ (GEMM) checkpoints in their exact on-disk layouts vs transformers on the same
dequantized weights."""
import pytest

from quant_ckpt import VOCAB, assert_matches_hf, generate, make_quant_llama

CASES = {  # name -> (scheme, make_quant_llama arguments)
    "gptq-v1-sym-g128": ("gptq", dict(bits=4, group_size=128, sym=True)),
    "gptq-v1-asym-g32-desc": ("gptq", dict(bits=4, group_size=32, sym=False, desc_act=True)),
    "gptq-v2-asym-g64": ("gptq", dict(bits=4, group_size=64, sym=False,
                                      checkpoint_format="gptq_v2")),
    "gptq-v1-sym-channel-desc": ("gptq", dict(bits=4, group_size=-1, sym=True, desc_act=True)),
    "gptq-8bit-asym-g32": ("gptq", dict(bits=8, group_size=32, sym=False)),
    "gptq-8bit-sym-v2-desc": ("gptq", dict(bits=8, group_size=64, sym=True, desc_act=True,
                                           checkpoint_format="gptq_v2")),
    "gptq-skip-down": ("gptq", dict(bits=4, group_size=64, sym=False, skip=("mlp.down_proj",))),
    "awq-zp-g64": ("awq", dict(group_size=64, sym=False, zero_point=True)),
    "awq-zp-g128-skip-gate": ("awq", dict(group_size=128, sym=False, zero_point=True,
                                          skip=("mlp.gate_proj", "mlp.up_proj"))),
    "awq-nozp-g32": ("awq", dict(group_size=32, sym=True, zero_point=False)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_hf(case, models_dir):
    path = models_dir / case
    scheme, kwargs = CASES[case]
    hf = make_quant_llama(path, VOCAB, scheme, **kwargs)
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
