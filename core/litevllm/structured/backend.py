"""The structured-output backend contract (``register_structured_output_backends``).

A backend turns ``StructuredOutputsParams`` into compiled grammars and per-sequence matchers.
``validate`` runs on the caller's thread at ``add_request`` and must be cheap; ``compile`` runs
on a worker thread and its result is cached per constraint.
"""
from __future__ import annotations

import torch

from litevllm.engine.host_tensors import to_device


class GrammarMatcher:
    """One sequence's position in its grammar."""

    def accept_token(self, token: int) -> bool:
        """Advance by one sampled token; False if the grammar does not allow it."""
        raise NotImplementedError

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        """Write the allowed next tokens into row ``row`` of an int32 [rows, ceil(V / 32)]
        bitmask on the CPU (bit ``t % 32`` of word ``t // 32`` set: token ``t`` allowed)."""
        raise NotImplementedError

    def rollback(self, num_tokens: int) -> None:
        raise NotImplementedError

    def is_terminated(self) -> bool:
        """The grammar is complete and its stop token accepted."""
        raise NotImplementedError


class StructuredOutputBackend:
    """Subclasses set ``name`` and implement ``validate``, ``compile`` and ``matcher``."""

    name = "base"

    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: list[int]):
        self.tokenizer, self.vocab_size, self.stop_token_ids = tokenizer, vocab_size, stop_token_ids

    def validate(self, params) -> None:
        """Raise ValueError naming the problem if ``params`` cannot be compiled."""
        raise NotImplementedError

    def compile(self, params):
        raise NotImplementedError

    def matcher(self, compiled) -> GrammarMatcher:
        raise NotImplementedError

    def allocate_bitmask(self, rows: int) -> torch.Tensor:
        return torch.full((rows, -(-self.vocab_size // 32)), -1, dtype=torch.int32)

    def fill_bitmasks(self, matchers: list[GrammarMatcher], bitmask: torch.Tensor,
                      rows: list[int]) -> None:
        """``matchers[i].fill_bitmask(bitmask, rows[i])`` for all i; a backend may do it in
        parallel (one step's constrained rows)."""
        for m, row in zip(matchers, rows):
            m.fill_bitmask(bitmask, row)


def apply_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """Mask with -inf the tokens whose bit is clear; the bitmask is unpacked on the logits'
    device. ``logits`` [R, V] float, ``bitmask`` int32 [R, ceil(V / 32)]."""
    if bitmask.dtype != torch.int32 or bitmask.dim() != 2 or bitmask.shape[0] != logits.shape[0]:
        raise ValueError(f"bitmask must be int32 [{logits.shape[0]}, W], got "
                         f"{bitmask.dtype} {tuple(bitmask.shape)}")
    words = to_device(bitmask, logits.device)
    shifts = torch.arange(32, device=logits.device, dtype=torch.int32)
    allowed = ((words[:, :, None] >> shifts) & 1).flatten(1)[:, :logits.shape[1]].bool()
    return logits.masked_fill(~allowed, float("-inf"))
