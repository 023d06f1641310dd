"""lm-evaluation-harness's `local-completions` model against the server on a tiny local task
(tests/lm_eval_task): log-likelihood requests (echo + prompt logprobs) and generation. The
log-likelihoods must equal the offline engine's prompt logprobs."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from litevllm import SamplingParams

TASK_DIR = Path(__file__).parent / "lm_eval_task"


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm_eval_tasks")
    data = TASK_DIR / "tiny_qa.jsonl"
    for name in ("tiny_qa.yaml", "tiny_qa_gen.yaml"):
        text = (TASK_DIR / name).read_text().replace("DATA_FILE", str(data))
        (out / name).write_text(text)
    return out


def test_lm_eval_local_completions(server, model_dir, ref_llm, tasks, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager
    results = lm_eval.simple_evaluate(
        model="local-completions",
        model_args={"base_url": server.url + "/v1/completions", "model": "tiny-llama",
                    "tokenizer": str(model_dir), "tokenizer_backend": "huggingface",
                    "num_concurrent": 2, "max_retries": 1, "tokenized_requests": True},
        tasks=["tiny_qa_mc", "tiny_qa_gen"], task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
        log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0,
        fewshot_random_seed=0)
    assert 0 <= results["results"]["tiny_qa_mc"]["acc,none"] <= 1
    assert "exact_match,none" in results["results"]["tiny_qa_gen"]
    tok = ref_llm.tokenizer
    samples = results["samples"]["tiny_qa_mc"]
    assert len(samples) == 4
    for sample in samples:
        for (context, continuation), (ll, _greedy) in zip(
                [r for r in sample["arguments"]], [r[0] for r in sample["resps"]]):
            ctx, cont = tok.encode(context), tok.encode(context + continuation)[len(tok.encode(context)):]
            ids = ctx + cont
            out = ref_llm.generate({"prompt_token_ids": ids},
                                   SamplingParams(max_tokens=1, prompt_logprobs=0))[0]
            want = sum(out.prompt_logprobs[i][ids[i]] for i in range(len(ctx), len(ids)))
            assert math.isclose(ll, want, abs_tol=1e-3), (context, continuation, ll, want)
    gens = results["samples"]["tiny_qa_gen"]
    for sample in gens:
        text = sample["resps"][0][0]
        want = ref_llm.generate(sample["arguments"][0][0],
                                SamplingParams(temperature=0, max_tokens=8, stop=["\n"]))[0]
        assert text == want.outputs[0].text
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
