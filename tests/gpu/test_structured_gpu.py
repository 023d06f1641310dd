"""Structured outputs on CUDA (bf16, Triton kernels, CUDA graphs on): the grammar bitmask is
applied to the logits on the device and every output obeys its constraint, alongside
unconstrained rows; constrained rows run multi-step too (the masks filled per step, tokens
copied back while the next step runs) with the tokens of single steps."""
import json
import re

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
pytest.importorskip("xgrammar")

from transformers import LlamaConfig  # noqa: E402

from litevllm import LLM, SamplingParams, StructuredOutputsParams  # noqa: E402
from litevllm.testing import tiny_tokenizer  # noqa: E402


def test_constrained_rows_on_the_device(random_hf_checkpoint, tmp_path):
    tok = tiny_tokenizer(tmp_path / "tok")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, bos_token_id=1, eos_token_id=2)
    path, _ = random_hf_checkpoint("llama_structured", config)
    tok.save_pretrained(path)
    llm = LLM(str(path), kernels="auto", max_num_seqs=16, gpu_memory_utilization=0.3)
    runs, decode_steps = [], llm.engine.runner.decode_steps
    llm.engine.runner.decode_steps = lambda seqs, k, pick: runs.append(k) or \
        decode_steps(seqs, k, pick)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"},
                                               "n": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["ok", "n"], "additionalProperties": False}
    json_params = SamplingParams(temperature=1.0, seed=1, max_tokens=60,
                                 structured_outputs=StructuredOutputsParams(json=schema))
    regex_params = SamplingParams(temperature=0, max_tokens=30,
                                  structured_outputs=StructuredOutputsParams(regex=r"[xyz]{4}"))
    free = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    outs = llm.generate(["hello"] * 6, [json_params, regex_params, free] * 2)
    for out, params in zip(outs, [json_params, regex_params, free] * 2):
        c = out.outputs[0]
        if params is json_params:
            assert c.finish_reason == "stop" and set(json.loads(c.text)) == {"ok", "n"}, c.text
        elif params is regex_params:
            assert c.finish_reason == "stop" and re.fullmatch(r"[xyz]{4}", c.text), c.text
        else:
            assert len(c.token_ids) == 40
    assert max(runs) > 1
    single = LLM(str(path), kernels="auto", max_num_seqs=16, gpu_memory_utilization=0.3,
                 num_scheduler_steps=1).generate(["hello"] * 6, [json_params, regex_params, free] * 2)
    assert [o.outputs[0].token_ids for o in outs] == [o.outputs[0].token_ids for o in single]
