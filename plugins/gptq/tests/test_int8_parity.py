"""Online int8 vs the unquantized model."""
import json

import torch

from litevllm.testing import logprob_rows

from quant_ckpt import (PROMPTS, VOCAB, assert_matches_hf, generate, make_quant_llama,
                        random_llama)


def test_online_int8_exact_on_int8_grid(models_dir):
    """Weights already on a per-channel 8-bit grid come back exactly: tight parity."""
    path = models_dir / "int8-grid"
    hf = make_quant_llama(path, VOCAB, "gptq", bits=8, group_size=-1)
    save_float(hf, path)
    assert_matches_hf(generate(path, quantization="int8"), hf)


def test_online_int8_close_to_unquantized(models_dir):
    path = models_dir / "int8-float"
    path.mkdir()
    hf = random_llama(VOCAB, seed=3)
    save_float(hf, path)
    outs = generate(path, quantization="int8")
    assert_matches_hf(outs, hf, atol=0.2, rtol=0, tokens=False)  # 8-bit rounding of random weights
    from litevllm import LLM
    model = LLM(str(path), quantization="int8", block_size=8).engine.model
    down = model.model.layers[0].mlp.down_proj
    assert down.packed.bits == 8 and down.packed.group_size == 256 and down.packed.bias is None
    assert not hasattr(down, "weight")
    # the quantization is real: logprobs differ from the float model's
    with torch.no_grad():
        ref = hf(torch.tensor([PROMPTS[0]])).logits[0].log_softmax(-1)
    got = logprob_rows(outs[0].prompt_logprobs[1:], VOCAB)
    assert (got - ref[:-1]).abs().max() > 1e-4


def save_float(hf, path):
    hf.config.architectures = ["LlamaForCausalLM"]
    hf.save_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    cfg.pop("quantization_config", None)
    (path / "config.json").write_text(json.dumps(cfg))
