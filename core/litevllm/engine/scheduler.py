"""Continuous batching with chunked prefill and recompute preemption.

Each step spends one token budget: running sequences first (decodes, unfinished prefill
chunks), oldest first, then waiting ones. When blocks run out, the newest running sequences
are preempted: their blocks are freed and they return to the front of the queue.

A request with n > 1 runs as one sequence until its prompt is computed, then forks into n
(``fork``): it counts as n sequences against ``max_num_seqs`` from admission, and the step that
completes its prompt keeps free the blocks its children copy their partial last block into.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from litevllm.config import SchedulerConfig
from litevllm.engine.block_manager import BlockManager
from litevllm.engine.sequence import Sequence, SeqStatus


@dataclass
class ScheduledBatch:
    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)

    def __bool__(self):
        return bool(self.seqs)


class Scheduler:
    def __init__(self, config: SchedulerConfig, block_manager: BlockManager, max_model_len: int):
        self.config, self.bm, self.max_model_len = config, block_manager, max_model_len
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    @property
    def max_seq_len(self) -> int:
        """The longest sequence that fits: max_model_len, or the whole KV cache if smaller."""
        return min(self.max_model_len, self.bm.num_blocks * self.bm.block_size)

    def check_admissible(self, num_prompt_tokens: int, n: int = 1) -> None:
        """Raise ValueError if a request could never be scheduled (it would wait forever)."""
        if num_prompt_tokens >= self.max_model_len:
            raise ValueError(f"prompt has {num_prompt_tokens} tokens, but max_model_len is "
                             f"{self.max_model_len} (room is needed for at least one output token)")
        fork = (n - 1) if num_prompt_tokens % self.bm.block_size else 0  # copies of the last block
        need = self.bm.blocks_needed(num_prompt_tokens + 1) + fork
        if need > self.bm.num_blocks:
            raise ValueError(f"prompt needs {need} KV-cache blocks but the cache holds only "
                             f"{self.bm.num_blocks}; raise the KV-cache memory or shorten the prompt")
        if n > self.config.max_num_seqs:
            raise ValueError(f"SamplingParams.n ({n}) exceeds max_num_seqs "
                             f"({self.config.max_num_seqs})")
        if not self.config.enable_chunked_prefill and \
                num_prompt_tokens > self.config.max_num_batched_tokens:
            raise ValueError(f"prompt has {num_prompt_tokens} tokens, more than "
                             f"max_num_batched_tokens ({self.config.max_num_batched_tokens}) "
                             f"with chunked prefill disabled")

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def preempt(self, seq: Sequence) -> None:
        """Free a running sequence's blocks; it goes back to the front of the queue and is
        recomputed (prompt and outputs so far) when scheduled again."""
        self.running.remove(seq)
        self.bm.free_seq(seq)
        seq.status = SeqStatus.WAITING
        seq.metrics.num_preemptions += 1
        self.waiting.appendleft(seq)

    def _preempt(self, seq: Sequence, batch: ScheduledBatch) -> None:
        self.preempt(seq)
        batch.preempted.append(seq)

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Start ``child`` as a running copy of ``parent`` (n > 1), sharing its full blocks."""
        self.bm.fork(parent, child)
        child.status = SeqStatus.RUNNING
        self.running.append(child)

    @staticmethod
    def will_fork(seq: Sequence) -> int:
        """How many more samples ``seq`` forks into once its prompt is computed (n > 1)."""
        return seq.params.n - 1 if seq.index == 0 and seq.num_output_tokens == 0 else 0

    def _fork_blocks(self, seq: Sequence, end: int) -> int:
        """Blocks the fork after a chunk ending at ``end`` needs: each child copies the
        partial last block."""
        if end < seq.num_tokens or end % self.bm.block_size == 0:
            return 0
        return self.will_fork(seq)

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.config.max_num_batched_tokens
        reserved = 0  # free blocks promised to forks that happen after this step's forward
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status is not SeqStatus.RUNNING:  # preempted by an older sequence
                continue
            if seq.is_decode and seq.num_output_tokens \
                    and seq.num_tokens <= len(seq.block_table) * self.bm.block_size:
                batch.seqs.append(seq)  # a decode that fits its blocks: nothing to allocate
                batch.num_new_tokens.append(1)
                budget -= 1
                continue
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            fork = self._fork_blocks(seq, seq.num_computed_tokens + n)
            while not self.bm.can_allocate(seq, n, reserve=reserved + fork):
                victim = self.running[-1]
                self._preempt(victim, batch)
                if victim is seq:
                    break
            if seq.status is not SeqStatus.RUNNING:
                continue
            self.bm.allocate(seq, n)
            reserved += fork
            batch.seqs.append(seq)
            batch.num_new_tokens.append(n)
            budget -= n
        num_seqs = len(self.running) + sum(self.will_fork(s) for s in self.running) \
            if self.waiting else 0
        while self.waiting and budget > 0 and not batch.preempted:
            seq = self.waiting[0]
            if num_seqs + 1 + self.will_fork(seq) > self.config.max_num_seqs:
                break
            # prompt logprobs need every prompt position computed, so no cached prefix
            cached = self.bm.cached_prefix(seq) if seq.params.prompt_logprobs is None else []
            remaining = seq.num_tokens - len(cached) * self.bm.block_size
            n = min(remaining, budget)
            if n < remaining and not self.config.enable_chunked_prefill \
                    and seq.num_output_tokens == 0:
                break
            fork = self._fork_blocks(seq, len(cached) * self.bm.block_size + n)
            if not self.bm.can_allocate(seq, n, cached, reserve=reserved + fork):
                break
            self.waiting.popleft()
            if cached:
                self.bm.use_cached_prefix(seq, cached)
            else:
                self.bm.queries += seq.num_tokens
            if seq.metrics.first_scheduled_time is None:
                seq.metrics.first_scheduled_time = time.monotonic()
                seq.metrics.num_cached_tokens = seq.num_computed_tokens
            self.bm.allocate(seq, n)
            reserved += fork
            num_seqs += 1 + self.will_fork(seq)
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            batch.seqs.append(seq)
            batch.num_new_tokens.append(n)
            budget -= n
        return batch

    def finish(self, seq: Sequence, reason: str) -> None:
        """Finish a running or waiting sequence and release its blocks at once."""
        if seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SeqStatus.WAITING and seq in self.waiting:
            self.waiting.remove(seq)
        self.bm.free_seq(seq)
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = seq.finish_reason or reason
        seq.metrics.finished_time = time.monotonic()
