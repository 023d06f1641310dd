"""A sequence: one sample stream of one request, with its tokens, blocks and progress."""
from __future__ import annotations

import enum
from array import array

from litevllm.outputs import RequestMetrics
from litevllm.sampling_params import SamplingParams


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    def __init__(self, seq_id: int, request_id: str, prompt_token_ids: list[int],
                 params: SamplingParams, index: int = 0, seed: int = 0):
        self.seq_id, self.request_id, self.index = seq_id, request_id, index
        self.token_ids = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        # the prompt as int64s (never changes): prefill inputs are copied from it in C
        self.prompt_ids = array("q", self.token_ids)
        self.params = params
        self.seed = seed                      # per-sample noise stream (see sampler)
        self.status = SeqStatus.WAITING
        self.num_computed_tokens = 0          # tokens whose KV is in the cache
        self.block_table: list[int] = []
        self.block_hashes: list[int] = []     # chained hashes of this sequence's full blocks
        self.num_committed_blocks = 0         # leading blocks already published to the cache
        self.finish_reason: str | None = None
        self.stop_reason: object = None
        self.metrics = RequestMetrics(num_prompt_tokens=len(prompt_token_ids))

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return self.num_tokens - self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SeqStatus.FINISHED

    @property
    def is_decode(self) -> bool:
        """Only the last token (the newest output) still needs computing."""
        return self.num_computed_tokens + 1 == self.num_tokens

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)
        self.metrics.num_output_tokens = self.num_output_tokens

    def truncate(self, num_tokens: int) -> None:
        """Drop the tokens after the first ``num_tokens`` (output past a stop string)."""
        del self.token_ids[num_tokens:]
        self.metrics.num_output_tokens = self.num_output_tokens

    def __repr__(self):
        return (f"Sequence({self.request_id}#{self.index}, tokens={self.num_tokens}, "
                f"computed={self.num_computed_tokens}, {self.status.value})")
