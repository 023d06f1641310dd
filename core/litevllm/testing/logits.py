"""Recording the logits an engine computes, through its public observer
(``LLMEngine.add_logits_observer``)::

    with observe_logits(llm) as seen:
        llm.generate(prompt, SamplingParams(temperature=0, max_tokens=4))
    seen.rows()   # [rows of every forward pass, V] float32 on the CPU
"""
from __future__ import annotations

from contextlib import contextmanager


class LogitsRecord:
    """One entry per forward pass: ``steps`` (logits [rows, V] float32 on the CPU, copies) and
    ``positions`` (the position of each row's token)."""

    def __init__(self):
        self.steps, self.positions = [], []

    def __call__(self, inputs, logits) -> None:
        import torch
        self.steps.append(logits.detach().to("cpu", torch.float32, copy=True))
        self.positions.append(inputs.positions[inputs.logit_rows].tolist())

    def rows(self):
        """Every recorded row in order, [N, V] (None when nothing was recorded)."""
        import torch
        return torch.cat(self.steps) if self.steps else None

    def clear(self) -> None:
        self.steps.clear()
        self.positions.clear()


@contextmanager
def observe_logits(llm):
    """Record the logits of every forward pass of ``llm`` (an ``LLM`` or ``LLMEngine``) while
    the block runs; yields the :class:`LogitsRecord`."""
    record = LogitsRecord()
    remove = getattr(llm, "engine", llm).add_logits_observer(record)
    try:
        yield record
    finally:
        remove()
