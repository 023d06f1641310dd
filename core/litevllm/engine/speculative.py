"""Speculative decoding around the scheduler: drafts before scheduling, acceptance statistics
after the step, and the switch that stops drafting when it does not pay.

Drafts go only to sequences whose tokens depend on the logits alone (``plain_sampling``); a
constrained sequence's draft is cut where its grammar rejects it (``trim``) and every verify
row gets the grammar's mask for its position. Verification (``Sampler.verify``) keeps greedy output identical
to plain decoding and samples exactly from the target distribution otherwise.
"""
from __future__ import annotations

from litevllm.config import SpeculativeConfig
from litevllm.engine.ngram_proposer import NgramProposer
from litevllm.engine.scheduler import ScheduledBatch, plain_sampling
from litevllm.engine.sequence import Sequence

EMA = 0.8            # weight of the past in the recent acceptance rate
PAUSE_STEPS = 8      # engine steps without drafts once the acceptance rate is too low


class SpeculativeDecoder:
    def __init__(self, config: SpeculativeConfig, max_seq_len: int, trim=None):
        self.config, self.max_seq_len = config, max_seq_len
        self.trim = trim   # (seq, draft) -> the draft's prefix a constrained sequence may take
        self.proposer = NgramProposer(config.num_speculative_tokens, config.prompt_lookup_min,
                                      config.prompt_lookup_max)
        self.synced: dict[int, int] = {}
        self.rate = 1.0
        self.paused = 0
        self.num_drafts = self.num_draft_tokens = self.num_accepted_tokens = 0
        self.accepted_per_pos = [0] * config.num_speculative_tokens  # i: drafts with > i accepted

    def propose(self, running: list[Sequence]) -> dict[int, list[int]] | None:
        """seq_id -> draft tokens for the running decodes, or None when drafting is off."""
        if self.paused:
            self.paused -= 1
            return None
        limit = self.config.disable_by_batch_size
        if limit is not None and len(running) > limit:
            return None
        drafts = {}
        for seq in running:
            if not seq.num_output_tokens or not seq.is_decode or not plain_sampling(seq):
                continue
            p = seq.params
            room = self.max_seq_len - seq.num_tokens
            if p.max_tokens is not None:
                room = min(room, p.max_tokens - seq.num_output_tokens)
            k = min(self.config.num_speculative_tokens, room - 1)
            if k <= 0:
                continue
            tokens = self.proposer.tokens(seq.seq_id, seq.token_ids, self.synced.get(seq.seq_id, 0))
            self.synced[seq.seq_id] = len(tokens)
            draft = self.proposer.propose(tokens, k)
            if draft and self.trim is not None and p.structured_outputs is not None:
                draft = self.trim(seq, draft)
            if draft:
                drafts[seq.seq_id] = draft
        return drafts or None

    def may_draft(self, num_running: int) -> bool:
        """Whether ``propose`` may read the sequences' tokens now (else it returns None)."""
        limit = self.config.disable_by_batch_size
        return not self.paused and (limit is None or num_running <= limit)

    def observe(self, batch: ScheduledBatch, tokens: dict[int, list[int]]) -> None:
        """Count drafted and accepted tokens of a verify step; pause drafting when few pass."""
        drafted = accepted = 0
        for seq_id, draft in batch.drafts.items():
            new = tokens.get(seq_id)
            if new is None:
                continue
            drafted += len(draft)
            accepted += len(new) - 1
            self.num_drafts += 1
            for i in range(len(new) - 1):
                self.accepted_per_pos[i] += 1
        if drafted:
            self.num_draft_tokens += drafted
            self.num_accepted_tokens += accepted
            self.rate = EMA * self.rate + (1 - EMA) * accepted / drafted
            if self.rate < self.config.min_acceptance_rate:
                self.paused, self.rate = PAUSE_STEPS, self.config.min_acceptance_rate

    def forget(self, seq_id: int) -> None:
        self.proposer.forget(seq_id)
        self.synced.pop(seq_id, None)

    def stats(self) -> dict:
        n = self.num_drafts
        return {"spec_num_drafts": n, "spec_num_draft_tokens": self.num_draft_tokens,
                "spec_num_accepted_tokens": self.num_accepted_tokens,
                "spec_num_accepted_tokens_per_pos": list(self.accepted_per_pos),
                "spec_acceptance_rate": self.num_accepted_tokens / max(1, self.num_draft_tokens),
                "spec_mean_acceptance_length": 1 + self.num_accepted_tokens / n if n else 0.0}
