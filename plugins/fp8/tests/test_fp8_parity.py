"""FP8 checkpoints (per-tensor, static input scales, block-wise, ignored layers) and online fp8
against transformers, teacher forced, on the CPU (weight-only dequant: float32 parity)."""
import pytest
import torch

from litevllm import LLM, SamplingParams
from litevllm.testing import logprob_rows

from fp8_packer import write_fp8_checkpoint

PROMPTS = [[5, 17, 99, 3, 150, 42, 7, 8, 9, 10, 11, 120, 130, 140], [64], [1, 2, 3, 4, 5, 6, 7]]
MAX_TOKENS = 8


def run(path, **kwargs):
    llm = LLM(str(path), dtype="float32", device="cpu", block_size=8, max_model_len=64,
              enforce_eager=True, **kwargs)
    vocab = llm.hf_config.vocab_size
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True,
                            logprobs=vocab, prompt_logprobs=vocab)
    return llm, llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params)


def hf_log_softmax(hf, ids):
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].float().log_softmax(-1)


def assert_matches_hf(outs, hf, atol=2e-4):
    vocab = hf.config.vocab_size
    for prompt, out in zip(PROMPTS, outs):
        gen = out.outputs[0].token_ids
        ref = hf_log_softmax(hf, prompt + gen)
        n = len(prompt)
        assert gen == ref[n - 1:-1].argmax(-1).tolist()
        torch.testing.assert_close(logprob_rows(out.outputs[0].logprobs, vocab), ref[n - 1:-1],
                                   atol=atol, rtol=1e-4)
        if n > 1:
            torch.testing.assert_close(logprob_rows(out.prompt_logprobs[1:], vocab), ref[:n - 1],
                                       atol=atol, rtol=1e-4)


def assert_close_to_hf(outs, hf):
    """Online fp8 vs the unquantized model: most greedy tokens agree, logprobs stay close."""
    agree = total = 0
    worst = 0.0
    for prompt, out in zip(PROMPTS, outs):
        gen = out.outputs[0].token_ids
        ref = hf_log_softmax(hf, prompt + gen)[len(prompt) - 1:-1]
        agree += sum(int(a == b) for a, b in zip(gen, ref.argmax(-1).tolist()))
        total += len(gen)
        got = torch.tensor([lp[t] for lp, t in zip(out.outputs[0].logprobs, gen)])
        worst = max(worst, float((got - ref[range(len(gen)), gen]).abs().max()))
    assert agree >= 0.8 * total, f"{agree}/{total} greedy tokens agree"
    assert worst < 0.25, f"logprob of a generated token off by {worst:.3f}"


CASES = {
    "per-tensor": dict(),
    "per-tensor-static": dict(static=True),
    "block-128": dict(block=(128, 128)),
    "block-64x32": dict(block=(64, 32)),
    "ignored-layers": dict(block=(128, 128), ignored=("model.layers.1.mlp.down_proj",
                                                      "self_attn.o_proj")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fp8_checkpoint_matches_hf_on_dequantized_weights(case, tmp_path):
    hf = write_fp8_checkpoint(tmp_path, **CASES[case])
    llm, outs = run(tmp_path)
    assert_matches_hf(outs, hf)
    layers = llm.engine.model.model.layers
    qkv = layers[0].self_attn.qkv_proj
    assert qkv.weight.dtype == torch.uint8  # fp8 bits, never dequantized at load
    assert type(layers[1].mlp.down_proj.method).__name__ == (
        "UnquantizedMethod" if case == "ignored-layers" else "Fp8LinearMethod")


def test_fused_shards_keep_their_own_scales(tmp_path):
    """q, k and v each bring a per-tensor scale; every row of the fused layer keeps its own."""
    write_fp8_checkpoint(tmp_path)
    from safetensors import safe_open
    llm, _ = run(tmp_path)
    qkv = llm.engine.model.model.layers[0].self_attn.qkv_proj
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        scales = [f.get_tensor(f"model.layers.0.self_attn.{p}_proj.weight_scale")
                  for p in "qkv"]
    want = torch.cat([s.expand(n) for s, n in zip(scales, qkv.output_sizes)])
    assert len({float(s) for s in scales}) == 3
    torch.testing.assert_close(qkv.w_scale[:, 0], want, atol=0, rtol=0)


def test_static_input_scale_is_the_max_over_shards(tmp_path):
    write_fp8_checkpoint(tmp_path, static=True)
    from safetensors import safe_open
    llm, _ = run(tmp_path)
    up = llm.engine.model.model.layers[1].mlp.gate_up_proj
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        want = max(float(f.get_tensor(f"model.layers.1.mlp.{p}_proj.input_scale"))
                   for p in ("gate", "up"))
    assert float(up.in_scale) == pytest.approx(want)


def test_online_fp8_close_to_unquantized(tmp_path):
    """quantization="fp8" on a float32 checkpoint: per-channel fp8 weights computed at load;
    greedy tokens mostly agree with the unquantized model and logprobs stay close."""
    from litevllm.testing import build_checkpoint, tiny_config
    from fp8_packer import SIZES
    hf = build_checkpoint("LlamaForCausalLM", tiny_config("LlamaForCausalLM", **SIZES), tmp_path)
    llm, outs = run(tmp_path, quantization="fp8")
    qkv = llm.engine.model.model.layers[0].self_attn.qkv_proj
    assert qkv.weight.dtype == torch.uint8 and qkv.w_scale.shape == (qkv.weight.shape[0], 1)
    assert_close_to_hf(outs, hf)
