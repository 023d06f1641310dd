"""Continuous batching with chunked prefill and recompute preemption. The scheduler alone owns
the KV-cache blocks: ``schedule`` picks the step's work and allocates its slots, ``update``
applies the step's sampled tokens (advances, forks, commits or rolls back blocks, finishes).

Each step spends one token budget: running sequences first (decodes, unfinished prefill
chunks), oldest first, then waiting ones, in arrival order or (``scheduling_policy``
"shortest-first") shortest prompt first, with aging (``wait_key``). When blocks run out, the
newest running sequences are preempted: their blocks are freed and they return to the front of
the queue.

A request with n > 1 runs as one sequence until its prompt is computed, then forks into n: it
counts as n sequences against ``max_num_seqs`` from admission, the step that completes its
prompt keeps free the blocks its children copy their partial last block into, and the batch
carries the children (``forks``) so the step samples their first tokens too.

Decode sequences may look ahead: ``schedule(lookahead=k)`` runs up to k+1 decode steps on the
device before the next sync (multi-step), ``schedule(drafts=...)`` verifies draft tokens
(speculative decoding). Blocks for unverified positions are rolled back in ``update`` and never
enter the prefix cache.

Async scheduling splits ``update``: ``advance`` applies a launched step with ``PLACEHOLDER``
tokens (so the next step is scheduled while the device runs this one), ``resolve`` puts in the
tokens read back, applies EOS and stop tokens, and commits the blocks they fill.
"""
from __future__ import annotations

import itertools
import time
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Callable

from litevllm.config import AGING_TOKENS_PER_S, SchedulerConfig
from litevllm.engine.block_manager import BlockManager
from litevllm.engine.request_check import check_prompt_length
from litevllm.engine.sequence import Sequence, SeqStatus


@dataclass
class ScheduledBatch:
    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)   # known tokens computed this step
    preempted: list[Sequence] = field(default_factory=list)
    forks: dict[int, list[Sequence]] = field(default_factory=dict)   # seq_id -> new children
    drafts: dict[int, list[int]] = field(default_factory=dict)       # seq_id -> draft tokens
    num_steps: int = 1                                               # decode steps (multi-step)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens) + sum(map(len, self.drafts.values()))

    def sample_seqs(self, seq: Sequence) -> list[Sequence]:
        """``seq`` and the children it forks into after this step."""
        children = self.forks.get(seq.seq_id)
        return [seq] + children if children else [seq]

    def subset(self, seqs: list[Sequence]) -> "ScheduledBatch":
        keep = {s.seq_id for s in seqs}
        out = ScheduledBatch(num_steps=self.num_steps)
        for s, n in zip(self.seqs, self.num_new_tokens):
            if s.seq_id in keep:
                out.seqs.append(s)
                out.num_new_tokens.append(n)
        out.forks = {k: v for k, v in self.forks.items() if k in keep}
        out.drafts = {k: v for k, v in self.drafts.items() if k in keep}
        return out

    def __bool__(self):
        return bool(self.seqs)


_ids = itertools.count(1 << 40)

PLACEHOLDER = -1   # a sampled token still on the device (async scheduling)
_seq_id = attrgetter("seq_id")
_ONE_PLACEHOLDER = [PLACEHOLDER]


def default_child(parent: Sequence, index: int) -> Sequence:
    return Sequence(next(_ids), parent.request_id, parent.token_ids, parent.params, index,
                    parent.seed + index)


def plain_sampling(seq: Sequence) -> bool:
    """Whether each token is sampled from the logits alone: no logprobs to record, no
    penalties or min_tokens depending on the tokens before it (speculative drafts need this)."""
    p = seq.params
    return p.logprobs is None and p.repetition_penalty == 1 and not p.presence_penalty \
        and not p.frequency_penalty and seq.num_output_tokens >= p.min_tokens


def wait_key(seq: Sequence) -> float:
    """Shortest-first queue order: preempted sequences first, then prompts by length plus an
    arrival-time term (aging; within a burst, shortest first). The arrival is the request's
    creation, so time spent compiling its grammar counts as waiting."""
    if seq.metrics.num_preemptions:
        return float("-inf")
    return seq.num_prompt_tokens + AGING_TOKENS_PER_S * seq.metrics.arrival_time


def multi_step_ok(seq: Sequence) -> bool:
    """Whether a decode can run several steps per host sync: plain sampling; a grammar is
    advanced between the steps (its stop token must end the sequence: no ignore_eos)."""
    return plain_sampling(seq) and (seq.params.structured_outputs is None
                                    or not seq.params.ignore_eos)


class Scheduler:
    def __init__(self, config: SchedulerConfig, num_blocks: int, block_size: int,
                 enable_prefix_caching: bool, max_model_len: int, eos_token_ids=(),
                 make_child: Callable[[Sequence, int], Sequence] = default_child):
        self.config, self.max_model_len = config, max_model_len
        self.bm = BlockManager(num_blocks, block_size, enable_prefix_caching)
        self.eos_token_ids = frozenset(eos_token_ids)
        self.make_child = make_child
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        # the longest sequence that fits: max_model_len, or the whole KV cache if smaller
        self.max_seq_len = min(max_model_len, self.bm.num_blocks * self.bm.block_size)

    def check_admissible(self, num_prompt_tokens: int, n: int = 1) -> None:
        """Raise ValueError if a request could never be scheduled (it would wait forever)."""
        check_prompt_length(num_prompt_tokens, self.max_model_len)
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
        if self.config.scheduling_policy == "fcfs":
            self.waiting.append(seq)
        else:  # shortest-first: the queue stays sorted by wait_key
            self.waiting.insert(bisect_right(self.waiting, wait_key(seq), key=wait_key), seq)

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

    def schedule(self, lookahead: int = 0, drafts: dict[int, list[int]] | None = None
                 ) -> ScheduledBatch:
        """The step's work. ``lookahead``: extra decode steps a batch of plain decodes may run
        before the next sync; ``drafts``: seq_id -> draft tokens to verify after its last token
        (dropped for a sequence whose blocks or budget cannot hold them)."""
        batch = ScheduledBatch()
        drafts = drafts or {}
        budget = self.config.max_num_batched_tokens
        reserved = 0  # free blocks promised to forks that happen after this step's forward
        bs, running = self.bm.block_size, SeqStatus.RUNNING
        add_seq, add_n = batch.seqs.append, batch.num_new_tokens.append
        allocated = []  # (seq, n) that took blocks; a decode that fits its blocks never forks
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status is not running:  # preempted by an older sequence
                continue
            # a decode that fits its blocks: nothing to allocate (the hot path, inlined)
            num_tokens = len(seq.token_ids)
            if seq.num_computed_tokens + 1 == num_tokens > seq.num_prompt_tokens \
                    and num_tokens <= len(seq.block_table) * bs \
                    and not (drafts and drafts.get(seq.seq_id)):
                add_seq(seq)
                add_n(1)
                budget -= 1
                continue
            draft = drafts.get(seq.seq_id)
            if draft and seq.is_decode and seq.num_output_tokens:
                draft = draft[:max(0, min(budget - 1, self.max_seq_len - seq.num_tokens))]
                if draft and self.bm.can_allocate(seq, 1 + len(draft), reserve=reserved):
                    self.bm.allocate(seq, 1 + len(draft))
                    batch.seqs.append(seq)
                    batch.num_new_tokens.append(1)
                    batch.drafts[seq.seq_id] = draft
                    budget -= 1 + len(draft)
                    continue
            if seq.is_decode and seq.num_output_tokens \
                    and seq.num_tokens <= len(seq.block_table) * bs:
                add_seq(seq)  # a decode that fits its blocks whose draft did not fit
                add_n(1)
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
            allocated.append((seq, n))
            budget -= n
        num_seqs = len(self.running) + sum(self.will_fork(s) for s in self.running) \
            if self.waiting else 0
        while self.waiting and budget > 0 and not batch.preempted:
            seq = self.waiting[0]
            if num_seqs + 1 + self.will_fork(seq) > self.config.max_num_seqs \
                    or seq.token_ids[-1] == PLACEHOLDER:  # preempted before its tokens were read
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
            allocated.append((seq, n))
            budget -= n
        for seq, n in allocated:  # (only a sequence without output tokens forks)
            if seq.params.n > 1 and self.will_fork(seq) and seq.num_computed_tokens + n == seq.num_tokens:
                batch.forks[seq.seq_id] = [self.make_child(seq, i) for i in range(1, seq.params.n)]
        if lookahead and not batch.drafts:
            batch.num_steps = self._lookahead(batch, lookahead + 1)
        return batch

    def _lookahead(self, batch: ScheduledBatch, k: int) -> int:
        """Decode steps for a batch of plain decodes (no arrivals waiting): fewer near the length
        limit, the batch's longest remaining max_tokens, or when blocks run short; else 1. Blocks
        for all steps are allocated; a sequence finishing part-way drops its later tokens."""
        if self.waiting or batch.preempted or batch.forks:
            return 1
        longest_left = 1
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            if n != 1 or not seq.is_decode or not multi_step_ok(seq):
                return 1
            k = max(1, min(k, self.max_seq_len - seq.num_tokens))
            p = seq.params
            left = k if p.max_tokens is None else p.max_tokens - seq.num_output_tokens
            longest_left = max(longest_left, left)
        k = min(k, longest_left)
        bm = self.bm

        def blocks_short(k: int) -> bool:
            need = sum(max(0, bm.blocks_needed(s.num_computed_tokens + k) - len(s.block_table))
                       for s in batch.seqs)
            return need > bm.num_free_blocks
        while k > 1 and blocks_short(k):  # shrink until the lookahead fits
            k -= 1
        if k > 1:
            for seq in batch.seqs:
                bm.allocate(seq, k)
        return k

    # after the forward -----------------------------------------------------------------------
    def update(self, batch: ScheduledBatch, sampled: dict[int, list[int]]
               ) -> list[tuple[Sequence, Exception]]:
        """Apply a step: ``sampled`` maps seq_id -> its new tokens (several after a multi-step
        or verify step; for a forking sequence also its children's). Advances the computed
        tokens, forks, commits full verified blocks, rolls back unused lookahead blocks and
        finishes sequences on EOS, stop tokens or length. Returns the sequences whose update
        raised (each left untouched by the others), for the caller to fail."""
        failed, running, forks, append = [], SeqStatus.RUNNING, batch.forks, self._append
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            if seq.status is not running:
                continue  # finished (aborted) since it was scheduled
            try:
                tokens = sampled.get(seq.seq_id)
                if not tokens:  # a prefill chunk short of the prompt's end
                    seq.num_computed_tokens += n
                    self.bm.commit(seq)
                    continue
                if seq.num_computed_tokens + 1 != len(seq.token_ids):  # the prompt's last
                    seq.num_computed_tokens += n - 1                   # chunk: a first token
                if forks and seq.seq_id in forks:
                    self._fork(seq, forks[seq.seq_id], sampled)
                append(seq, tokens)
            except Exception as e:  # noqa: BLE001 - isolated per sequence, reported upwards
                failed.append((seq, e))
        return failed

    def _fork(self, seq: Sequence, children: list[Sequence], sampled: dict) -> None:
        for child in children:
            seq.num_computed_tokens += 1
            self.bm.fork(seq, child)
            seq.num_computed_tokens -= 1
            child.num_computed_tokens -= 1
            child.status = SeqStatus.RUNNING
            self.running.append(child)
            self._append(child, sampled[child.seq_id])

    def _append(self, seq: Sequence, tokens: list[int]) -> None:
        """Append tokens one at a time (each one's predecessor is now computed) until one
        finishes the sequence; commit, then roll back blocks past the verified tokens.
        Placeholders (async scheduling) are not committed: ``resolve`` commits them."""
        p, m, ids = seq.params, seq.metrics, seq.token_ids
        placeholders = tokens[0] == PLACEHOLDER
        if m.first_token_time is None and not placeholders:
            m.first_token_time = time.monotonic()
        max_tokens = p.max_tokens if p.max_tokens is not None else self.max_seq_len
        eos, stops, max_seq_len = self.eos_token_ids, p.stop_token_ids, self.max_seq_len
        for token in tokens:  # Sequence.append_token inlined: the per-token hot loop
            seq.num_computed_tokens += 1
            ids.append(token)
            num_tokens = len(ids)
            num_out = m.num_output_tokens = num_tokens - seq.num_prompt_tokens
            reason = None
            if (token in eos or token in stops) and self._stops(p, token, num_out):
                reason = "stop"
                seq.stop_reason = token if token in p.stop_token_ids else None
            elif num_out >= max_tokens or num_tokens >= max_seq_len:
                reason = "length"
            if reason is not None:
                self.finish(seq, reason)
                return
        bm = self.bm
        bs = bm.block_size
        if not placeholders and seq.num_computed_tokens // bs > seq.num_committed_blocks:
            bm.commit(seq)
        if len(seq.block_table) * bs >= len(ids) + bs:
            bm.trim(seq, len(ids))

    def _stops(self, p, token: int, num_out: int) -> bool:
        """Whether ``token``, output number ``num_out``, is EOS or a stop token past min_tokens."""
        return (token in p.stop_token_ids or (not p.ignore_eos and token in self.eos_token_ids)) \
            and num_out > p.min_tokens

    # async scheduling ------------------------------------------------------------------------
    def advance(self, batch: ScheduledBatch, sampled: list[Sequence], num_steps: int = 1
                ) -> list[tuple[Sequence, Exception]]:
        """``update`` for a launched step whose tokens are still on the device: each sampled
        sequence (``sampled``, forks included) gets ``num_steps`` ``PLACEHOLDER`` tokens, so
        the next step can be scheduled before this one's tokens are read. One that reaches its
        length limit finishes now; EOS and stop tokens are applied by ``resolve``."""
        return self.update(batch, dict.fromkeys(map(_seq_id, sampled), [PLACEHOLDER] * num_steps))

    def resolve(self, seqs: list[Sequence], rows: list) -> dict[int, list[int]]:
        """Put the tokens read back (per sequence: a token, or a list of them for a multi-step
        run) in place of ``advance``'s placeholders, stop at EOS and stop tokens (dropping the
        later ones) and commit the blocks they fill. Returns seq_id -> tokens for the
        sequences that held placeholders (the others finished before ``advance``)."""
        done, now, eos, commit = {}, time.monotonic(), self.eos_token_ids, self.bm.commit
        bs, running, finished = self.bm.block_size, SeqStatus.RUNNING, SeqStatus.FINISHED
        for seq, row in zip(seqs, rows):
            ids = seq.token_ids
            if ids[-1] != PLACEHOLDER:
                continue
            if type(row) is list:  # a multi-step run: as many tokens as placeholders
                n = 1
                while n < len(row) and ids[-1 - n] == PLACEHOLDER:
                    n += 1
                row = ids[-n:] = row[:n]
                plain = eos.isdisjoint(row)
            else:
                ids[-1] = row
                plain = row not in eos
                row = [row]
            done[seq.seq_id] = row
            m, p, status = seq.metrics, seq.params, seq.status
            if m.first_token_time is None:
                m.first_token_time = now
            if status is finished and seq.finish_reason == "length":
                m.finished_time = now  # by advance: the token is out only now
            stops = p.stop_token_ids
            if plain and not (stops and any(t in stops for t in row)):
                if status is running and seq.num_computed_tokens // bs > seq.num_committed_blocks:
                    commit(seq)  # a block filled up
                continue
            start = len(ids) - len(row)
            for i, token in enumerate(row):
                if (token in eos or token in p.stop_token_ids) \
                        and self._stops(p, token, start + i + 1 - seq.num_prompt_tokens):
                    seq.stop_reason = token if token in p.stop_token_ids else None
                    seq.truncate(start + i + 1)
                    del row[i + 1:]
                    if seq.is_finished:   # by length in advance: a stop token comes first
                        seq.finish_reason = "stop"
                    else:                 # running, or preempted since advance
                        self.finish(seq, "stop")
                    break
            if seq.status is SeqStatus.RUNNING:
                commit(seq)
        return done

    def stop(self, seq: Sequence, num_tokens: int, stop_reason: object) -> None:
        """A stop string ended ``seq`` after its first ``num_tokens`` tokens (seen by the output
        layer, possibly in a token that already finished it): drop the later tokens."""
        if not seq.is_finished:
            self.finish(seq, "stop")
        seq.finish_reason, seq.stop_reason = "stop", stop_reason
        seq.truncate(num_tokens)


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

    def take_copies(self) -> list[tuple[int, int]]:
        """(src, dst) block copies the forks since the last call need before the next forward."""
        return self.bm.take_copies()

    def stats(self) -> dict:
        bm = self.bm
        return {"num_running": len(self.running), "num_waiting": len(self.waiting),
                "num_blocks": bm.num_blocks, "num_free_blocks": bm.num_free_blocks,
                "prefix_cache_hit_rate": bm.hit_rate(), "prefix_cache_hits": bm.hits,
                "prefix_cache_queries": bm.queries}
