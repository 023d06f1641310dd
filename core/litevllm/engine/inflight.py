"""A step launched on the device whose tokens the host has not read yet (async scheduling).

While the device runs step n, the engine schedules step n+1 as if every sampled sequence got
one token, k for a k-step run (``Scheduler.advance`` appends ``PLACEHOLDER`` tokens), launches
it with the input ids of continuing sequences taken from step n's last sampled tokens on the
device (``feed``), and only then reads step n's tokens (``Scheduler.resolve``, stops, outputs).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch

from litevllm.engine.host_tensors import int_tensor, to_device
from litevllm.engine.sampler import LaunchedSample, SampleResult
from litevllm.engine.scheduler import ScheduledBatch
from litevllm.engine.sequence import Sequence


@dataclass
class StepResult:
    tokens: dict[int, list[int]]            # seq_id -> new tokens (several: multi-step, verify)
    logprobs: dict[int, list]               # seq_id -> per new token {token: logprob} or None


@dataclass
class LaunchedStep:
    batch: ScheduledBatch
    seqs: list[Sequence]                    # sampled rows in order (children after their parent)
    sample: LaunchedSample | None           # their tokens, still on the device
    verified: dict[int, list[int]] = field(default_factory=dict)  # verify rows, on the host
    _read: SampleResult | None = None

    def read(self) -> SampleResult:
        """The sampled rows' tokens and logprobs (waits for their copy to the host)."""
        if self._read is None:
            self._read = self.sample.result() if self.sample is not None else SampleResult([], [])
        return self._read

    def result(self, tokens: dict[int, list[int]] | None = None) -> StepResult:
        """The step's new tokens and logprobs per sequence: every row, or the rows in
        ``tokens`` (seq_id -> new tokens, from ``Scheduler.resolve``)."""
        read = self.read()
        if tokens is None:
            tokens = {s.seq_id: [t] for s, t in zip(self.seqs, read.token_ids)}
        logprobs = {}
        if self.sample is not None and self.sample.want_logprobs is not None:
            logprobs = {s.seq_id: [lp] for s, lp in zip(self.seqs, read.logprobs)
                        if lp is not None and s.seq_id in tokens}
        tokens.update(self.verified)
        return StepResult(tokens, logprobs)


def feed(input_ids: torch.Tensor, batch: ScheduledBatch, prev: LaunchedStep) -> None:
    """Put ``prev``'s sampled tokens (on the device) in place of the placeholders among
    ``batch``'s flat input ids: the last input token of each sequence ``prev`` sampled."""
    seqs, tokens = batch.seqs, prev.sample.tokens
    if len(seqs) == len(prev.seqs) == input_ids.shape[0] and all(map(operator.is_, seqs, prev.seqs)):
        input_ids.copy_(tokens)  # the same decodes in the same order: the common case
        return
    row = {s.seq_id: i for i, s in enumerate(prev.seqs)}
    dst, src, end = [], [], 0
    for seq, n in zip(seqs, batch.num_new_tokens):
        end += n
        i = row.get(seq.seq_id)
        if i is not None:
            dst.append(end - 1)
            src.append(i)
    if dst:
        dev = input_ids.device
        input_ids.index_copy_(0, to_device(int_tensor(dst), dev),
                              tokens.index_select(0, to_device(int_tensor(src), dev)))
