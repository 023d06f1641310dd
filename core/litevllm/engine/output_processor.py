"""The output layer: detokenization, stop strings, logprobs and ``RequestOutput`` objects.

Its state (decoded text, logprobs, how many tokens it has seen) is kept per sequence id; the
tokens themselves are the scheduler's. A stop string may end a sequence inside a run of several
new tokens (multi-step, speculative): the scheduler then drops the tokens after it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from litevllm.engine.detokenizer import Detokenizer, DetokState, find_stop, stream_delta
from litevllm.engine.sampler import prompt_logprobs
from litevllm.engine.sequence import Sequence, SeqStatus
from litevllm.outputs import CompletionOutput, RequestOutput
from litevllm.sampling_params import SamplingParams


class Request:
    def __init__(self, request_id, prompt, prompt_token_ids, params: SamplingParams):
        self.request_id, self.prompt, self.params = request_id, prompt, params
        self.prompt_token_ids = prompt_token_ids
        self.seqs: list[Sequence] = []
        self.forked = params.n == 1
        self.prompt_logprobs: list | None = [None] if params.prompt_logprobs is not None else None
        self.error: str | None = None

    @property
    def finished(self) -> bool:
        seqs = self.seqs
        if len(seqs) == 1:  # the common case, without a generator
            return self.forked and seqs[0].status is SeqStatus.FINISHED
        return self.forked and all(s.is_finished for s in seqs)


@dataclass
class SeqOutputState:
    num_tokens: int                                   # tokens seen (prompt included)
    detok: DetokState
    logprobs: list[dict] = field(default_factory=list)


class OutputProcessor:
    def __init__(self, tokenizer, scheduler):
        self.detokenizer = Detokenizer(tokenizer) if tokenizer is not None else None
        self.scheduler = scheduler
        self.states: dict[int, SeqOutputState] = {}

    def add(self, seq: Sequence) -> None:
        self.states[seq.seq_id] = SeqOutputState(seq.num_tokens, DetokState(seq.num_prompt_tokens))

    def free(self, seq_id: int) -> None:
        self.states.pop(seq_id, None)

    def process(self, seq: Sequence, logprobs: list | None = None) -> list[int]:
        """Take in the tokens the scheduler appended to ``seq`` since the last call; returns
        them (cut at a stop string, which finishes the sequence)."""
        state = self.states[seq.seq_id]
        start = state.num_tokens
        new = seq.token_ids[start:]
        if self.detokenizer is None and logprobs is None:  # token ids only: the loop below
            state.num_tokens = start + len(new)
            return new
        p = seq.params
        for j in range(len(new)):
            end = state.num_tokens = start + j + 1
            if logprobs is not None and logprobs[j] is not None:
                state.logprobs.append(logprobs[j])
            if self.detokenizer is None:
                continue
            last = end == seq.num_tokens
            if last and seq.finish_reason == "stop" and not isinstance(seq.stop_reason, str):
                # a stop token ends it: its own text is left out, held-back text is final
                self.detokenizer.step(state.detok, seq.token_ids[:-1], p.skip_special_tokens, True)
                break
            ids = seq.token_ids if last else seq.token_ids[:end]
            piece = self.detokenizer.step(state.detok, ids, p.skip_special_tokens)
            if piece and p.stop and end - seq.num_prompt_tokens >= p.min_tokens:
                hit = find_stop(state.detok.text, len(piece), p.stop)
                if hit is not None:
                    i, stop = hit
                    state.detok.text = state.detok.text[:i + (len(stop) if p.include_stop_str_in_output else 0)]
                    self.scheduler.stop(seq, end, stop)
                    return new[:j + 1]
            if last and seq.is_finished:
                self.detokenizer.step(state.detok, ids, p.skip_special_tokens, final=True)
        return new

    def record_prompt_logprobs(self, request: Request, seq: Sequence, start: int, n: int,
                               logits) -> None:
        """Logprobs of the prompt tokens a chunk predicts (first sample only). Row ``i`` of
        ``logits`` is position ``start + i``, which predicts token ``start + i + 1``."""
        first = len(request.prompt_logprobs) - 1   # first position not yet recorded
        stop = min(start + n, seq.num_prompt_tokens - 1)
        if seq.index != 0 or not start <= first < stop:
            return  # recorded before (recomputation after preemption), or nothing to record
        next_tokens = seq.token_ids[first + 1:stop + 1]
        rows = logits[first - start:first - start + len(next_tokens)]
        request.prompt_logprobs += prompt_logprobs(rows, next_tokens, request.params.prompt_logprobs)

    def output(self, request: Request, deltas: dict[int, list[int]]) -> RequestOutput:
        outs = []
        for seq in request.seqs:
            state = self.states.get(seq.seq_id)
            text = state.detok.text if state else ""
            delta_text = stream_delta(state.detok, seq.params.stop, seq.is_finished) if state else ""
            logprobs = list(state.logprobs) if state and seq.params.logprobs is not None else None
            outs.append(CompletionOutput(seq.index, text, seq.output_token_ids, seq.finish_reason,
                                         seq.stop_reason, logprobs, delta_text,
                                         deltas.get(seq.index, [])))
        head = request.seqs[0]
        return RequestOutput(request.request_id, request.prompt, request.prompt_token_ids, outs,
                             request.finished, head.metrics, request.prompt_logprobs,
                             head.metrics.num_cached_tokens, request.error)
