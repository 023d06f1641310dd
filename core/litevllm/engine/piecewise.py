"""CUDA graphs for steps that are not plain decodes: prefill chunks, mixed prefill+decode
batches and speculative verify steps, one per token-count bucket.

With a backend whose attention can run inside a graph (``AttentionBackend.varlen_in_graph``) a
bucket is one graph of the whole forward, attention included: the step's metadata is copied
into static buffers padded to the bucket (padding sequences own no query rows), so the graph's
kernels read the step's lengths on the device; its first node computes each row's position and
cache slot from them (``positions_and_slots``: padding tokens get slot -1).

Otherwise the forward is captured as a chain of graphs split at every attention call: graph 0
runs from the embedding to layer 0's q/k/v, graph i from layer i-1's attention output to layer
i's q/k/v, the last one to the final norm. Attention, whose launch depends on per-step metadata
(query starts, lengths, block tables), runs eagerly between replays on the first ``n`` (real)
rows of the captured q/k/v and writes a static output buffer that the next graph reads. The
graphs see a static slot buffer (the step's slots, then -1), so a rotary op that stores k/v
(``AttentionBackend.rotary_stores_kv``) stores them from inside the graph.

Either way steps are padded to the bucket with stale token ids and positions; padded rows never
reach the KV cache, and every other op works row by row, so they cannot change real rows. All
buckets share one memory pool; they are captured at start-up, the largest first, within a time
budget, and any left over on first use.

A model that does not run every layer's attention through the backend's ``forward`` (one call
per KV cache) stays eager, as does any step after a failed capture.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import torch

from litevllm.attention.backend import AttentionMetadata, AttentionSpec
from litevllm.kinds import op_takes
from litevllm.ops import torch_ops

log = logging.getLogger("litevllm")

SMALLEST_BUCKET = 16
POW2_UP_TO = 256  # buckets double up to here, then come 4 per octave (padding <= 25%)
# start-up capture (largest bucket first) stops after this long; the rest capture on first use
CAPTURE_BUDGET_S = 3.0


def token_buckets(max_tokens: int) -> list[int]:
    """Token counts captured: 16, 32, ..., 256, 320, 384, 448, 512, 640, ... and ``max_tokens``."""
    sizes, b = [], SMALLEST_BUCKET
    while b < max_tokens:
        sizes.append(b)
        b = b * 2 if b < POW2_UP_TO else b + (1 << (b.bit_length() - 1)) // 4
    return sizes + [max_tokens]


def rows_op(positions_and_slots, block_size: int):
    """``rows(meta, positions, slots)``: the op ``positions_and_slots`` on a step's metadata."""
    def rows(meta: AttentionMetadata, positions: torch.Tensor, slots: torch.Tensor) -> None:
        positions_and_slots(meta.query_start_loc, meta.seq_lens, meta.block_tables, block_size,
                            positions, slots)
    return rows


def unowned_view(t: torch.Tensor) -> torch.Tensor:
    """A view of ``t``'s memory that does not keep it alive: later pieces of a capture may reuse
    the memory, which they overwrite only after the attention call between them has read it."""
    s = t.untyped_storage()
    storage = torch._C._construct_storage_from_data_pointer(s.data_ptr(), t.device, s.nbytes())
    return torch.empty(0, dtype=t.dtype, device=t.device).set_(
        storage, t.storage_offset(), t.shape, t.stride())


@dataclass
class AttentionCall:
    """One attention call between two graphs: its inputs as the graph before leaves them."""
    spec: AttentionSpec
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    layer: int              # index of its KV cache
    out: torch.Tensor       # [bucket, H*D] static buffer the next graph reads


@dataclass
class Piece:
    graphs: list            # len(calls) + 1 CUDA graphs (whole steps: one, no calls)
    calls: list[AttentionCall]
    hidden: torch.Tensor    # [bucket, hidden] final hidden states
    out: torch.Tensor | None = None  # whole steps: the attention buffer the graph writes


class PiecewiseGraphs:
    """``forward`` runs the model for a step of up to ``max_tokens`` tokens from graphs, capturing
    its bucket first when new; None means the caller runs the model eagerly. Whole-step graphs
    need ``max_seqs`` and ``max_blocks`` (the block-table width) for their metadata buffers."""

    def __init__(self, model, attn, device: torch.device, max_tokens: int, max_seqs: int = 0,
                 max_blocks: int = 0, rows=None):
        self.model, self.attn, self.device = model, attn, device
        # rows(meta, positions, slots): each row's position and slot from the metadata (whole
        # steps compute them inside the graph); default the torch reference op
        self._rows = rows or rows_op(torch_ops.positions_and_slots, attn.block_size)
        self.buckets = token_buckets(max_tokens)
        self.pieces: dict[int, Piece] = {}
        self.disabled = False
        self.capture_seconds = 0.0
        self.ids = torch.zeros(max_tokens, dtype=torch.int64, device=device)
        self.pos = torch.zeros(max_tokens, dtype=torch.int64, device=device)
        self.slots = torch.full((max_tokens,), -1, dtype=torch.int64, device=device)
        self._out: torch.Tensor | None = None   # flat attention-output buffer
        self._pool = self._stream = None
        self.whole = bool(getattr(attn, "varlen_in_graph", False)) and max_seqs > 0 < max_blocks
        if self.whole:  # the step's metadata, padded to the bucket
            self.max_seqs = max_seqs
            self.qsl = torch.zeros(max_seqs + 1, dtype=torch.int32, device=device)
            self.seq_lens = torch.zeros(max_seqs, dtype=torch.int32, device=device)
            self.tables = torch.zeros(max_seqs, max_blocks, dtype=torch.int32, device=device)

    @property
    def _into(self) -> bool:
        """Whether the backend's forward takes ``out`` (by class: the cache holds no backend)."""
        return op_takes(type(self.attn).forward, "out")

    def bucket(self, n: int) -> int | None:
        return next((b for b in self.buckets if b >= n), None)

    def forward(self, input_ids, positions, kv_caches, meta) -> torch.Tensor | None:
        """Hidden states [n, hidden] for the step ``meta`` describes, or None. Piecewise graphs
        run ``attn.prepare`` eagerly; whole-step graphs hold it, and compute the positions and
        slots from the metadata (``positions`` and ``meta.slot_mapping`` are not read; ``rows``
        gives the graph's)."""
        size = None if self.disabled else self.bucket(input_ids.shape[0])
        if size is None:
            return None
        if not self.whole:
            meta = self.attn.prepare(meta)
        elif meta.num_seqs > self._bucket_seqs(size):
            return None
        piece = self.pieces.get(size) or self._capture(size, kv_caches, meta)
        if piece is None:
            return None
        n = input_ids.shape[0]
        self.ids[:n].copy_(input_ids)
        if self.whole:
            self._load_meta(size, n, meta)
            piece.graphs[0].replay()
            return piece.hidden[:n]
        self.pos[:n].copy_(positions)
        self.slots[:n].copy_(meta.slot_mapping)
        self.slots[n:size].fill_(-1)  # padding rows: an earlier step's slots would be stale
        into = self._into
        for graph, call in zip(piece.graphs, piece.calls):
            graph.replay()
            kw = {"out": call.out[:n]} if into else {}  # straight into the next graph's input
            got = self.attn.forward(call.spec, call.q[:n], call.k[:n], call.v[:n],
                                    kv_caches[call.layer], meta, **kw)
            if got.data_ptr() != call.out.data_ptr():  # a new tensor: copied there
                call.out[:n].copy_(got)
        piece.graphs[-1].replay()
        return piece.hidden[:n]

    def capture(self, kv_caches, meta, budget_s: float = CAPTURE_BUDGET_S) -> None:
        """Capture buckets, the largest first (always), until ``budget_s`` has passed (at
        start-up: steps then do not stop to capture). ``meta`` only travels through the model
        of piecewise captures (attention does not run; its slots are replaced by the static
        buffer's); whole-step graphs use their own."""
        t0 = time.perf_counter()
        for size in reversed(self.buckets):
            if self.disabled or self._capture(size, kv_caches, meta) is None or \
                    time.perf_counter() - t0 > budget_s:
                break
        log.info("captured %s CUDA graphs for %d of %d token buckets in %.1f s",
                 "whole-step" if self.whole else "piecewise", len(self.pieces),
                 len(self.buckets), time.perf_counter() - t0)

    def rows(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions and slots of the last whole-step replay's ``n`` rows (until the next)."""
        return self.pos[:n], self.slots[:n]

    # whole-step metadata ---------------------------------------------------------------------
    def _bucket_seqs(self, size: int) -> int:
        return min(size, self.max_seqs)  # every sequence brings at least one token

    def _static_meta(self, size: int) -> AttentionMetadata:
        s = self._bucket_seqs(size)
        return AttentionMetadata(
            slot_mapping=self.slots[:size], query_start_loc=self.qsl[:s + 1],
            seq_lens=self.seq_lens[:s], block_tables=self.tables[:s], max_query_len=size,
            max_seq_len=self.tables.shape[1] * self.attn.block_size, num_seqs=s, is_decode=False)

    def _whole_meta(self, size: int) -> AttentionMetadata:
        """The graph's first nodes: each row's position and slot from the static metadata,
        then the backend's ``prepare`` (which may read them)."""
        meta = self._static_meta(size)
        self._rows(meta, self.pos[:size], self.slots[:size])
        return self.attn.prepare(meta)

    def _load_meta(self, size: int, n: int, meta: AttentionMetadata) -> None:
        """The step's metadata into the static buffers: padding sequences start at ``n`` (no
        query rows, never read), so the graph gives padding tokens slot -1 (their k/v are not
        stored)."""
        b, s = meta.num_seqs, self._bucket_seqs(size)
        self.qsl[:b + 1].copy_(meta.query_start_loc)
        self.qsl[b + 1:s + 1].fill_(n)
        self.seq_lens[:b].copy_(meta.seq_lens)
        self.tables[:b, :meta.block_tables.shape[1]].copy_(meta.block_tables)

    # capture ---------------------------------------------------------------------------------
    def _capture(self, size, kv_caches, meta) -> Piece | None:
        t0 = time.perf_counter()
        try:
            piece = self._record(size, kv_caches, meta)
        except Exception as e:  # noqa: BLE001 -- any op that cannot be captured: stay eager
            log.warning("CUDA graphs for steps that are not plain decodes off (they run "
                        "eagerly): capturing %d tokens failed: %s", size,
                        str(e).splitlines()[0] if str(e) else type(e).__name__)
            self.disabled = True
            return None
        self.pieces[size] = piece
        self.capture_seconds += time.perf_counter() - t0
        log.debug("CUDA graphs for %d tokens (%d pieces) captured in %.3f s", size,
                  len(piece.graphs), time.perf_counter() - t0)
        return piece

    def _out_view(self, size: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        need = len(self.ids) * width
        if self._out is None or self._out.numel() < need or self._out.dtype != dtype:
            # only outside a capture (the dry run comes first); old views stay valid
            self._out = torch.zeros(need, dtype=dtype, device=self.device)
        return self._out[:size * width].view(size, width)

    def _run(self, size, kv_caches, meta, on_attention):
        """The model over ``size`` static rows, ``on_attention(spec, q, k, v, cache)`` standing in
        for the backend's forward."""
        def forward(spec, q, k, v, kv_cache, meta):
            return on_attention(spec, q, k, v, kv_cache)
        self.attn.forward = forward  # instance attribute: shadows the method for this run only
        try:
            return self.model(self.ids[:size], self.pos[:size], kv_caches, meta)
        finally:
            del self.attn.forward

    def _attend(self, size, meta):
        """Whole steps: the backend's attention, into the shared output buffer when its
        ``forward`` takes ``out`` (padding rows then hold earlier steps' finite values)."""
        cls = type(self.attn)

        def attend(spec, q, k, v, cache):
            kw = {"out": self._out_view(size, q.shape[1] * q.shape[2], q.dtype)} \
                if self._into else {}
            return cls.forward(self.attn, spec, q, k, v, cache, meta, **kw)
        return attend

    def _dry(self, size, kv_caches, meta, attend=None) -> None:
        """One run (attention only with ``attend``): compiles this shape's kernels, sizes the
        output buffer and checks that attention runs through the backend once per KV cache."""
        layers = {id(c): i for i, c in enumerate(kv_caches)}
        seen: list[int] = []

        def dry(spec, q, k, v, cache):
            seen.append(layers.get(id(cache), -1))
            if attend:
                return attend(spec, q, k, v, cache)
            return self._out_view(size, q.shape[1] * q.shape[2], q.dtype)

        self._run(size, kv_caches, meta, dry)
        if sorted(seen) != list(range(len(kv_caches))):
            raise RuntimeError(f"the model ran {len(seen)} attention calls through the backend "
                               f"for {len(kv_caches)} KV caches")

    def _record(self, size, kv_caches, meta) -> Piece:
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
            self._pool = torch.cuda.graph_pool_handle()
        stream = self._stream
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            if self.whole:  # the dry run attends to nothing and stores nothing (no rows)
                self.qsl.zero_()
                meta = self._whole_meta(size)
            else:  # the pieces' own slots (a rotary op may store k/v): none stored yet
                self.slots.fill_(-1)
                meta = dataclasses.replace(meta, slot_mapping=self.slots[:size])
            self._dry(size, kv_caches, meta, self._attend(size, meta) if self.whole else None)
            torch.cuda.synchronize(self.device)
            layers = {id(c): i for i, c in enumerate(kv_caches)}
            graphs, calls = [torch.cuda.CUDAGraph()], []

            def split(spec, q, k, v, cache):
                out = self._out_view(size, q.shape[1] * q.shape[2], q.dtype)
                graphs[-1].capture_end()
                calls.append(AttentionCall(spec, unowned_view(q), unowned_view(k), unowned_view(v),
                                           layers[id(cache)], out))
                graphs.append(torch.cuda.CUDAGraph())
                graphs[-1].capture_begin(pool=self._pool)
                return out

            graphs[0].capture_begin(pool=self._pool)
            try:
                if self.whole:  # the rows and prepare() too: they replay with every step
                    meta = self._whole_meta(size)
                    hidden = self._run(size, kv_caches, meta, self._attend(size, meta))
                else:
                    hidden = self._run(size, kv_caches, meta, split)
            except BaseException:
                try:
                    graphs[-1].capture_end()
                except Exception:  # noqa: BLE001 -- the capture is already invalid
                    pass
                raise
            graphs[-1].capture_end()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        return Piece(graphs, calls, hidden, self._out if self.whole else None)
