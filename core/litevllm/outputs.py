"""Result objects, shaped like vLLM's."""
from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class RequestMetrics:
    arrival_time: float = field(default_factory=time.monotonic)
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    num_output_tokens: int = 0
    num_preemptions: int = 0


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
