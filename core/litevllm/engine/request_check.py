"""The request checks that need only the model's vocabulary size and ``max_model_len``: one
source for ``LLMEngine.add_request``, ``AsyncLLMEngine.check_request`` and front ends that hold
no engine (the Ray ingress). Each raises ValueError naming the cause."""
from __future__ import annotations

from litevllm.sampling_params import SamplingParams


def check_prompt_length(num_prompt_tokens: int, max_model_len: int) -> None:
    if num_prompt_tokens >= max_model_len:
        raise ValueError(f"prompt has {num_prompt_tokens} tokens, but max_model_len is "
                         f"{max_model_len} (room is needed for at least one output token)")


def check_request(prompt_token_ids: list[int], params: SamplingParams, vocab_size: int,
                  max_model_len: int) -> None:
    """Whether a request is valid for a model of ``vocab_size`` and ``max_model_len``; the
    engine adds the checks that need its KV cache (``Scheduler.check_admissible``)."""
    if not isinstance(params, SamplingParams):
        raise ValueError(f"sampling params must be a SamplingParams, got {type(params).__name__}")
    if not prompt_token_ids:
        raise ValueError("prompt is empty")
    vocab, ids, p = vocab_size, prompt_token_ids, params
    if min(ids) < 0 or max(ids) >= vocab:
        raise ValueError(f"prompt token ids must be in [0, {vocab})")
    if any(not 0 <= t < vocab for t in p.stop_token_ids):
        raise ValueError(f"SamplingParams.stop_token_ids must be in [0, {vocab}), "
                         f"got {p.stop_token_ids!r}")
    for name in ("logprobs", "prompt_logprobs", "top_k"):
        if (getattr(p, name) or 0) > vocab:
            raise ValueError(f"SamplingParams.{name} must be at most the vocabulary size "
                             f"{vocab}, got {getattr(p, name)}")
    for name in ("max_tokens", "min_tokens"):
        if (getattr(p, name) or 0) > max_model_len:
            raise ValueError(f"SamplingParams.{name} must be at most max_model_len "
                             f"{max_model_len}, got {getattr(p, name)}")
    check_prompt_length(len(ids), max_model_len)
