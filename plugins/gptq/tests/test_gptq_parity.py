"""GPTQ checkpoints (exact on-disk layout) vs transformers on the same dequantized weights."""
import pytest

from conftest import VOCAB, assert_matches_hf, generate
from quant_ckpt import make_quant_llama

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
