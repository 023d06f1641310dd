"""Result objects, shaped like vLLM's."""
from __future__ import annotations

from dataclasses import dataclass, field

from litevllm.engine.sequence import RequestMetrics


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None     # "stop" | "length" | "abort" | "error" | None
    stop_reason: object = None           # the stop string or token id that ended it
    logprobs: list[dict] | None = None
    delta_text: str = ""                 # new since the previous output of this request
    delta_token_ids: list[int] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics | None = None
    prompt_logprobs: list[dict | None] | None = None
    num_cached_tokens: int = 0
    error: str | None = None

    @property
    def cache_hit_rate(self) -> float:
        return self.num_cached_tokens / max(1, len(self.prompt_token_ids))
