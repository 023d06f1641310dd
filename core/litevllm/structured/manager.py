"""The engine's structured-output state: the backend (loaded on first use), compiled grammars
(compiled on a worker thread, cached per constraint) and one matcher per sequence id."""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from litevllm.engine.host_tensors import HostCopy, to_device
from litevllm.structured.backend import apply_bitmask

log = logging.getLogger("litevllm")


class StructuredOutputManager:
    def __init__(self, plugin_manager, tokenizer, vocab_size: int, stop_token_ids: list[int],
                 backend: str = "auto"):
        self.plugins, self.tokenizer = plugin_manager, tokenizer
        self.vocab_size, self.stop_token_ids, self.backend_name = vocab_size, stop_token_ids, backend
        self._backend = None
        self._pool: ThreadPoolExecutor | None = None
        self.compiled: dict[tuple, Future] = {}
        self.matchers: dict[int, object] = {}

    @property
    def backend(self):
        if self._backend is None:
            kind = "structured_output_backends"
            names = self.plugins.names(kind)
            if not names:
                raise ValueError("structured outputs need a backend plugin; none is installed "
                                 "(pip install litevllm-plugin-xgrammar)")
            entry = self.plugins.select(kind, self.backend_name)
            if entry is None:
                raise ValueError(f"structured-output backend '{self.backend_name}' is not "
                                 f"installed (available: {', '.join(names)})")
            if self.tokenizer is None:
                raise ValueError("structured outputs need the model's tokenizer")
            self._backend = entry.load()(self.tokenizer, self.vocab_size, self.stop_token_ids)
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="litevllm-grammar")
        return self._backend

    def submit(self, params) -> Future:
        """Check ``params`` now (ValueError naming the problem) and start compiling it on the
        worker thread, or return the cached compilation."""
        key = params.key()
        done = self.compiled.get(key)
        if done is not None:
            if done.done() and done.exception() is not None:
                raise ValueError(str(done.exception()))
            return done
        self.backend.validate(params)
        future = self.compiled[key] = self._pool.submit(self.backend.compile, params)
        return future

    def _matcher(self, seq):
        m = self.matchers.get(seq.seq_id)
        if m is None:
            compiled = self.compiled[seq.params.structured_outputs.key()].result()
            m = self.matchers[seq.seq_id] = self.backend.matcher(compiled)
        return m

    def mask(self, logits: torch.Tensor, seqs) -> torch.Tensor:
        """Apply the grammars of the constrained rows of ``logits`` (one row per sequence)."""
        if not self.compiled:  # no request ever had a grammar (each one's is submitted)
            return logits
        rows = [i for i, s in enumerate(seqs)  # finished: a dropped row (async scheduling)
                if s.params.structured_outputs is not None and not s.is_finished]
        if not rows:
            return logits
        bitmask = self.backend.allocate_bitmask(len(rows))
        self.backend.fill_bitmasks([self._matcher(seqs[i]) for i in rows], bitmask,
                                   list(range(len(rows))))
        return self._apply(logits, rows, bitmask)

    @staticmethod
    def _apply(logits: torch.Tensor, rows: list[int], bitmask, index=None) -> torch.Tensor:
        if len(rows) == logits.shape[0]:
            return apply_bitmask(logits, bitmask)
        if index is None:
            index = to_device(torch.tensor(rows), logits.device)
        return logits.index_copy(0, index, apply_bitmask(logits[index], bitmask))

    def step_picker(self, seqs, pick):
        """Wrap ``pick(logits, j)`` of a multi-step run: before step j each constrained row gets
        its grammar's mask, the matcher advanced by the row's earlier tokens of the run (they
        come back to the host while step j's forward runs). Returns (picker, done); ``done()``
        rolls the matchers back, so ``accept`` advances them over the kept tokens as after a
        single step. A row whose grammar terminated runs unmasked: its stop token ends it."""
        rows = [i for i, s in enumerate(seqs) if s.params.structured_outputs is not None] \
            if self.compiled else None  # no request ever had a grammar (each one's is submitted)
        if not rows:
            return pick, lambda: None
        matchers = [self._matcher(seqs[i]) for i in rows]
        moved = [0] * len(rows)
        last: list = []   # the previous step's tokens (a HostCopy)
        index: dict = {}  # device -> the rows as a tensor, made once per run

        def picker(logits: torch.Tensor, j: int) -> torch.Tensor:
            dev = logits.device
            if dev not in index:
                index[dev] = to_device(torch.tensor(rows), dev)
            if last:  # the previous step's tokens, copied back while this step's forward ran
                (host,) = last.pop().get()
                for r, (m, token) in enumerate(zip(matchers, host.tolist())):
                    if not m.is_terminated() and m.accept_token(token):
                        moved[r] += 1
            bitmask = self.backend.allocate_bitmask(len(rows))
            live = [r for r, m in enumerate(matchers) if not m.is_terminated()]
            self.backend.fill_bitmasks([matchers[r] for r in live], bitmask, live)
            out = pick(self._apply(logits, rows, bitmask, index[dev]), j)
            last.append(HostCopy(out[index[dev]]))
            return out

        def done() -> None:
            for m, n in zip(matchers, moved):
                if n:
                    m.rollback(n)
        return picker, done

    def valid_draft(self, seq, draft: list[int]) -> list[int]:
        """The longest prefix of ``draft`` that ``seq``'s grammar accepts (state unchanged)."""
        m = self._matcher(seq)
        n = 0
        for token in draft:
            if m.is_terminated() or not m.accept_token(token):
                break
            n += 1
        if n:
            m.rollback(n)
        return draft[:n]

    def mask_drafts(self, logits: torch.Tensor, seqs, drafts) -> torch.Tensor:
        """Mask verify rows (1 + len(draft) per sequence): row j of a constrained sequence gets
        its grammar's mask after the first j draft tokens (which ``valid_draft`` checked)."""
        if all(s.params.structured_outputs is None for s in seqs):
            return logits
        rows, start = [], 0
        for seq, draft in zip(seqs, drafts):
            if seq.params.structured_outputs is not None:
                rows.append((seq, draft, start))
            start += len(draft) + 1
        bitmask = self.backend.allocate_bitmask(sum(len(d) + 1 for _, d, _ in rows))
        index, j = [], 0
        for seq, draft, start in rows:
            m = self._matcher(seq)
            for i in range(len(draft) + 1):
                if not m.is_terminated():  # after a drafted stop token: unused, left open
                    m.fill_bitmask(bitmask, j)
                index.append(start + i)
                j += 1
                if i < len(draft):
                    m.accept_token(draft[i])
            if draft:
                m.rollback(len(draft))
        index = torch.tensor(index, device=logits.device)
        return logits.index_copy(0, index, apply_bitmask(logits[index], bitmask))

    def accept(self, seq, tokens: list[int]) -> bool:
        """Advance ``seq``'s grammar; returns whether it is now terminated."""
        m = self._matcher(seq)
        for token in tokens:
            if not m.accept_token(token):
                raise RuntimeError(f"the grammar rejected token {token} it had allowed")
        return m.is_terminated()

    def free(self, seq_id: int) -> None:
        self.matchers.pop(seq_id, None)
