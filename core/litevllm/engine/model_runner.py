"""Turns a scheduled batch into tensors, runs the model, returns logits.

Decode-only batches replay CUDA graphs captured per batch-size bucket when the attention
backend supports it; other steps of up to ``piecewise_tokens`` tokens replay graphs per
token bucket (engine/piecewise.py: the whole step, or pieces with attention run eagerly between
them); the rest runs eagerly.
"""
from __future__ import annotations

import logging
import time
from array import array
from dataclasses import dataclass
from operator import attrgetter

import torch

from litevllm.attention.backend import AttentionMetadata
from litevllm.engine.block_tables import BlockTableRows
from litevllm.engine.host_tensors import int_tensor, to_device, to_device_packed
from litevllm.engine.piecewise import PiecewiseGraphs, rows_op
from litevllm.engine.precompile import Precompiler, join_prefetch
from litevllm.engine.scheduler import ScheduledBatch
from litevllm.ops import torch_ops

log = logging.getLogger("litevllm")
# single-sequence prefill lengths the start-up dry pass also runs (tiles that follow the query
# length compile ahead: short prompts, chunk tails, speculative verify steps)
SHORT_PREFILLS = (1, 2, 4, 8, 16, 32, 64)
_computed = attrgetter("num_computed_tokens")


@dataclass
class StepInputs:
    input_ids: torch.Tensor
    positions: torch.Tensor | None  # None (and meta.slot_mapping None): ModelRunner.rows
    meta: AttentionMetadata
    logit_rows: list[int]          # flat token rows whose logits are needed, increasing
    sample_index: list[int]        # for each scheduled seq: its row in logit_rows, or -1
    prompt_index: list[int]        # for each scheduled seq: first prompt-logprob row, or -1
    logit_index: torch.Tensor | None = None  # logit_rows on the device, unless they are a range


def token_rows(tables: torch.Tensor, starts: list[int], counts: list[int], block_size: int):
    """(owner, first, positions, slots) of a step whose sequence i takes ``counts[i]`` tokens
    from position ``starts[i]`` on: each token's sequence, each sequence's first row, each
    token's position and cache slot through ``tables`` ([B, width] int32), in a few tensor ops
    (no Python step per token)."""
    counts_t = int_tensor(counts)
    owner = torch.repeat_interleave(torch.arange(len(counts)), counts_t)
    first = torch.cumsum(counts_t, 0) - counts_t
    pos = int_tensor(starts)[owner] + torch.arange(len(owner)) - first[owner]
    slots = tables[owner, pos // block_size].to(torch.int64) * block_size + pos % block_size
    return owner, first, pos, slots


def graph_buckets(max_num_seqs: int) -> list[int]:
    sizes, b = [], 1
    while b < max_num_seqs:
        sizes.append(b)
        b *= 2
    return sizes + [max_num_seqs]


class ModelRunner:
    def __init__(self, model, attn_backend, device: torch.device, block_size: int,
                 max_model_len: int, max_num_seqs: int, use_cuda_graphs: bool,
                 piecewise_tokens: int = 0, precompiler: Precompiler | None = None,
                 positions_and_slots=torch_ops.positions_and_slots):
        self.model, self.attn, self.device = model, attn_backend, device
        # each row's position and slot of prefill and mixed steps, on the device
        self._rows_into = rows_op(positions_and_slots, block_size)
        self.block_size, self.max_model_len, self.max_num_seqs = block_size, max_model_len, max_num_seqs
        self.max_blocks_per_seq = -(-max_model_len // block_size)
        self.table_rows = BlockTableRows(self.max_blocks_per_seq, 2 * max_num_seqs + 1)
        self.kv_caches: list[torch.Tensor] = []
        self.use_cuda_graphs = use_cuda_graphs and device.type == "cuda" and \
            getattr(attn_backend, "supports_cuda_graphs", False)
        self.graphs: dict[int, tuple] = {}
        self.piecewise = PiecewiseGraphs(model, attn_backend, device, piecewise_tokens,
                                         max_num_seqs, self.max_blocks_per_seq,
                                         self._rows_into) \
            if self.use_cuda_graphs and piecewise_tokens > 0 else None
        self.capture_seconds = 0.0
        self.precompiler = precompiler  # used once, by the first of profiling and capture
        # fn(inputs, logits) after every forward pass (LLMEngine.add_logits_observer); a tuple,
        # replaced on change, so the engine thread never sees it mid-update
        self.logits_observers: tuple = ()

    # KV cache --------------------------------------------------------------------------------
    def bytes_per_block(self) -> int:
        heads, dim = self.model.kv_shape()
        itemsize = self.attn.kv_cache_dtype.itemsize  # float8: half of bf16, twice the blocks
        return 2 * self.block_size * heads * dim * itemsize * self.model.num_kv_layers()

    def allocate_kv_cache(self, num_blocks: int) -> None:
        t0 = time.perf_counter()
        heads, dim = self.model.kv_shape()
        self.kv_caches = [self.attn.allocate_kv_cache(num_blocks, heads, dim)
                          for _ in range(self.model.num_kv_layers())]
        log.debug("start-up: KV cache of %d blocks allocated in %.2f s", num_blocks,
                  time.perf_counter() - t0)

    def copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        if not copies:
            return
        src = to_device(int_tensor([c[0] for c in copies]), self.device)
        dst = to_device(int_tensor([c[1] for c in copies]), self.device)
        for cache in self.kv_caches:  # as bytes: any cache dtype (torch indexes few float8 ops)
            raw = cache.view(torch.uint8)
            raw[:, dst] = raw[:, src]

    # inputs ----------------------------------------------------------------------------------
    def release(self, seq_ids) -> None:
        """Forget finished sequences' cached block-table rows."""
        self.table_rows.release(seq_ids)

    def _block_tables(self, seqs) -> torch.Tensor:
        """[B, width] int32 on the CPU, from rows that only receive newly added blocks."""
        return self.table_rows.gather(seqs)

    def _decode_inputs(self, seqs, k: int = 1) -> list[StepInputs]:
        """Inputs of ``k`` decode steps (positions p .. p+k-1 of each sequence) with one copy to
        the device, rows padded to a multiple of 4 so that every step's views start 16-byte
        aligned. Positions, slots and lengths of all ``k`` steps come from tensor ops on the host
        (one Python pass over the batch); input ids after the first step come from the device
        at run time."""
        bs, n, dev = self.block_size, len(seqs), self.device
        start = list(map(_computed, seqs))
        first_ids = [s.token_ids[p] for s, p in zip(seqs, start)]
        tables = self._block_tables(seqs)
        pad = [0] * (-n % 4)  # padding columns, never read
        pos = int_tensor(start + pad)[None, :] + torch.arange(k)[:, None]  # [k, n + pad]
        ints = torch.zeros(3, k, n + len(pad), dtype=torch.int64)  # ids (step 0), pos, slots
        ints[0, 0] = int_tensor(first_ids + pad)
        ints[1] = pos
        ints[2, :, :n] = tables.gather(1, (pos[:, :n] // bs).T).T * bs + pos[:, :n] % bs
        lens = (pos + 1).to(torch.int32)
        ints, qsl, lens, tables = to_device_packed(
            [ints, torch.arange(n + 1, dtype=torch.int32), lens, tables], dev)
        top, rows = max(start), list(range(n))
        return [StepInputs(ints[0, j, :n], ints[1, j, :n], AttentionMetadata(
            slot_mapping=ints[2, j, :n], query_start_loc=qsl, seq_lens=lens[j, :n],
            block_tables=tables,
            max_query_len=1, max_seq_len=top + j + 1, num_seqs=n, is_decode=True,
            query_lens_cpu=[1] * n, seq_lens_cpu=[p + j + 1 for p in start]),
            rows, rows, [-1] * n) for j in range(k)]

    def _verify_inputs(self, seqs, drafts: dict[int, list[int]]) -> StepInputs:
        """A verify step laid out as decode rows: token j of a sequence's 1 + len(draft) tokens
        is a row of its own that attends to the sequence's first p + j + 1 positions through
        the sequence's block-table row. Verify steps so replay the decode CUDA graphs."""
        counts = [1 + len(drafts.get(s.seq_id, ())) for s in seqs]
        ids = []
        for s in seqs:
            ids.append(s.token_ids[s.num_computed_tokens])
            ids.extend(drafts.get(s.seq_id, ()))
        tables = self._block_tables(seqs)
        owner, first, pos, slots = token_rows(tables, [s.num_computed_tokens for s in seqs],
                                              counts, self.block_size)
        n, seq_lens, dev = len(owner), (pos + 1).to(torch.int32), self.device
        ids, pos, slots, qsl, seq_lens_dev, tables_dev = to_device_packed(
            [int_tensor(ids), pos, slots, torch.arange(n + 1, dtype=torch.int32), seq_lens,
             tables[owner]], dev)
        rows = list(range(n))
        return StepInputs(ids, pos, AttentionMetadata(
            slot_mapping=slots, query_start_loc=qsl, seq_lens=seq_lens_dev,
            block_tables=tables_dev, max_query_len=1,
            max_seq_len=int(seq_lens.max()), num_seqs=n, is_decode=True, query_lens_cpu=[1] * n,
            seq_lens_cpu=seq_lens.tolist()), rows, first.tolist(), [-1] * len(seqs))

    def prepare(self, batch: ScheduledBatch) -> StepInputs:
        for s, n in zip(batch.seqs, batch.num_new_tokens):  # all decodes? (is_decode inlined)
            if n != 1 or s.num_computed_tokens + 1 != len(s.token_ids) \
                    or s.params.prompt_logprobs is not None:
                break
        else:
            if not batch.drafts:
                return self._decode_inputs(batch.seqs)[0]
            rows = len(batch.seqs) + sum(len(batch.drafts.get(s.seq_id, ())) for s in batch.seqs)
            if rows <= self.max_num_seqs:  # as decode rows: the decode graphs take the step
                return self._verify_inputs(batch.seqs, batch.drafts)
            # more rows than a decode graph holds: one sequence each, as in mixed steps
        ids, qsl, seq_lens = array("q"), [0], []
        logit_rows, sample_index, prompt_index, query_lens = [], [], [], []
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            draft = batch.drafts.get(seq.seq_id, ())  # verified in the same pass: n + d rows
            start = seq.num_computed_tokens
            end = start + n
            p = seq.num_prompt_tokens
            if start < p:  # prompt tokens: a C copy from the sequence's array
                ids += seq.prompt_ids[start:min(end, p)]
            if end > p:
                ids.extend(seq.token_ids[max(start, p):end])
            ids.extend(draft)
            n += len(draft)
            prompt_index.append(-1)
            if seq.params.prompt_logprobs is not None and start < p:
                prompt_index[-1] = len(logit_rows)
                logit_rows.extend(range(qsl[-1], qsl[-1] + n - (end == seq.num_tokens)))
            if end == seq.num_tokens:
                sample_index.append(len(logit_rows))
                logit_rows.extend(range(qsl[-1] + n - 1 - len(draft), qsl[-1] + n))
            else:
                sample_index.append(-1)
            qsl.append(qsl[-1] + n)
            seq_lens.append(start + n)
            query_lens.append(n)
        parts = [int_tensor(ids), int_tensor(qsl, torch.int32), int_tensor(seq_lens, torch.int32),
                 self._block_tables(batch.seqs)]
        if logit_rows and logit_rows[-1] - logit_rows[0] != len(logit_rows) - 1:
            parts.append(int_tensor(logit_rows))  # rows increase: a range unless gaps
        ids, qsl_dev, lens_dev, tables, *index = to_device_packed(parts, self.device)
        # positions and slots: from the metadata on the device (``rows``), at execute
        meta = AttentionMetadata(
            slot_mapping=None, query_start_loc=qsl_dev, seq_lens=lens_dev,
            block_tables=tables,
            max_query_len=max(query_lens), max_seq_len=max(seq_lens), num_seqs=len(seq_lens),
            is_decode=max(query_lens) == 1, query_lens_cpu=query_lens, seq_lens_cpu=seq_lens)
        return StepInputs(ids, None, meta, logit_rows, sample_index, prompt_index, *index)

    def rows(self, inputs: StepInputs) -> StepInputs:
        """``inputs`` with its positions and slots, computed on the device from the metadata
        when ``prepare`` left them out (prefill and mixed steps; whole-step graphs compute
        their own inside the graph)."""
        if inputs.positions is None:
            n = inputs.input_ids.shape[0]
            pos = torch.empty(n, dtype=torch.int64, device=self.device)
            slots = torch.empty(n, dtype=torch.int64, device=self.device)
            self._rows_into(inputs.meta, pos, slots)
            inputs.positions, inputs.meta.slot_mapping = pos, slots
        return inputs

    @torch.inference_mode()
    def decode_steps(self, seqs, k: int, pick, first=None) -> torch.Tensor:
        """``k`` decode steps back to back, each step's tokens (``pick(logits, j)``, on the
        device) feeding the next; returns [k, B] token ids, still on the device. Blocks for
        all ``k`` positions must be allocated. ``first(input_ids)`` may rewrite the first
        step's input ids in place (async scheduling: tokens of the step still in flight)."""
        ids, out = None, []
        for j, inputs in enumerate(self._decode_inputs(seqs, k)):
            if ids is not None:
                inputs.input_ids = ids  # the previous step's tokens, never copied to the host
            elif first is not None:
                first(inputs.input_ids)
            ids = pick(self.execute(inputs), j)
            out.append(ids)
        return torch.stack(out)

    # execution -------------------------------------------------------------------------------
    @torch.inference_mode()
    def execute(self, inputs: StepInputs) -> torch.Tensor:
        """Logits [len(logit_rows), V] float32, as the logits observers left them."""
        n = inputs.meta.num_seqs
        if self.graphs and inputs.meta.is_decode and n <= self.max_num_seqs:
            logits = self._replay(self.rows(inputs))
        else:
            hidden = None
            if self.piecewise is not None:
                if not self.piecewise.whole:
                    self.rows(inputs)
                hidden = self.piecewise.forward(inputs.input_ids, inputs.positions,
                                                self.kv_caches, inputs.meta)
                if hidden is not None and inputs.positions is None:  # the graph's own
                    inputs.positions, inputs.meta.slot_mapping = self.piecewise.rows(len(hidden))
            if hidden is None:
                self.rows(inputs)
                hidden = self.model(inputs.input_ids, inputs.positions, self.kv_caches,
                                    self.attn.prepare(inputs.meta))
            hidden = self._logit_hidden(hidden, inputs)
            logits = self.model.compute_logits(hidden)
        if self.logits_observers:
            for observer in self.logits_observers:
                replaced = observer(inputs, logits)
                if replaced is not None:
                    logits = replaced
        return logits

    def _logit_hidden(self, hidden: torch.Tensor, inputs: StepInputs) -> torch.Tensor:
        """The rows of ``hidden`` whose logits the step needs: the index ``prepare`` copied with
        the step's inputs, or else a slice (without an index the rows are a range: a prompt's
        last token, every decode row)."""
        rows = inputs.logit_rows
        if inputs.logit_index is not None:
            return hidden.index_select(0, inputs.logit_index)
        return hidden[rows[0]:rows[0] + len(rows)] if rows else hidden[:0]

    # CUDA graphs -----------------------------------------------------------------------------
    def _graph_meta(self, bs: int) -> AttentionMetadata:
        buf = self.graph_buffers
        return AttentionMetadata(
            slot_mapping=buf["slots"][:bs], query_start_loc=buf["qsl"][:bs + 1],
            seq_lens=buf["seq_lens"][:bs], block_tables=buf["tables"][:bs],
            max_query_len=1, max_seq_len=self.max_model_len, num_seqs=bs, is_decode=True,
            query_lens_cpu=[1] * bs, seq_lens_cpu=[1] * bs)

    def _make_graph_buffers(self) -> None:
        m, dev = self.max_num_seqs, self.device
        self.graph_buffers = {
            "ids": torch.zeros(m, dtype=torch.int64, device=dev),
            "pos": torch.zeros(m, dtype=torch.int64, device=dev),
            "slots": torch.full((m,), -1, dtype=torch.int64, device=dev),
            "qsl": torch.arange(m + 1, dtype=torch.int32, device=dev),
            "seq_lens": torch.ones(m, dtype=torch.int32, device=dev),
            "tables": torch.zeros(m, self.max_blocks_per_seq, dtype=torch.int32, device=dev),
        }

    def _graph_forward(self, bs: int, meta: AttentionMetadata | None = None) -> torch.Tensor:
        """The decode step a graph of batch ``bs`` holds: logits from the graph buffers."""
        buf = self.graph_buffers
        if meta is None:
            meta = self.attn.prepare(self._graph_meta(bs))
        return self.model.compute_logits(self.model(buf["ids"][:bs], buf["pos"][:bs],
                                                    self.kv_caches, meta))

    def _compile_ahead(self, *forwards) -> None:
        """Once: a dry pass over ``forwards`` and the graph buckets' steps, whose missing Triton
        kernels then compile in parallel (engine/precompile.py); any failure leaves them to
        the JIT."""
        pc, self.precompiler = self.precompiler, None
        join_prefetch()  # also without a pool: the first launch would build cuda_utils again
        if pc is None:
            return
        try:
            with pc.dry_pass():
                for forward in forwards:
                    forward()
                if self.use_cuda_graphs:
                    self._make_graph_buffers()
                    for bs in graph_buckets(self.max_num_seqs):
                        self._graph_forward(bs)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            pc.compile_pending()
        except Exception as e:
            log.warning("kernel precompile skipped (%s: %s)", type(e).__name__, e)
        finally:
            pc.close()

    @torch.inference_mode()
    def capture_cuda_graphs(self) -> None:
        self._compile_ahead()
        if not self.use_cuda_graphs:
            return
        t0 = time.perf_counter()
        self._make_graph_buffers()
        pool = None
        for bs in reversed(graph_buckets(self.max_num_seqs)):
            t1 = time.perf_counter()
            # prepare() inside the capture replays with every step, else it runs once here
            meta = None if self.attn.prepare_in_graph else self.attn.prepare(self._graph_meta(bs))
            self._graph_forward(bs, meta)  # one eager run first: compiles outside the capture
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                logits = self._graph_forward(bs, meta)
            pool = graph.pool()
            self.graphs[bs] = (graph, logits)
            log.debug("start-up: graph for batch %d captured in %.2f s", bs,
                      time.perf_counter() - t1)
        torch.cuda.synchronize()
        self.capture_seconds = time.perf_counter() - t0
        log.info("captured %d CUDA graphs in %.1f s", len(self.graphs), self.capture_seconds)
        if self.piecewise:  # the metadata only travels through the model: no attention runs
            self.piecewise.capture(self.kv_caches, self._graph_meta(1))

    def _replay(self, inputs: StepInputs) -> torch.Tensor:
        n = inputs.meta.num_seqs
        bs = next(b for b in sorted(self.graphs) if b >= n)
        buf, meta = self.graph_buffers, inputs.meta
        buf["ids"][:n].copy_(inputs.input_ids)
        buf["pos"][:n].copy_(inputs.positions)
        buf["slots"][:n].copy_(meta.slot_mapping)
        buf["slots"][n:bs].fill_(-1)
        buf["seq_lens"][:n].copy_(meta.seq_lens)
        buf["seq_lens"][n:bs].fill_(1)
        width = meta.block_tables.shape[1]
        buf["tables"][:n, :width].copy_(meta.block_tables)
        graph, logits = self.graphs[bs]
        graph.replay()
        return logits[:n]

    # memory profiling ------------------------------------------------------------------------
    def _prefill_forward(self, lens: list[int], blocks_per_seq: int, logit_rows: int = 1):
        """A prefill of sequences of ``lens`` tokens over the first KV blocks, then the logits of
        its last ``logit_rows`` tokens (start-up only)."""
        qsl = [0]
        for n in lens:
            qsl.append(qsl[-1] + n)
        tables = torch.arange(len(lens) * blocks_per_seq, dtype=torch.int32).view(len(lens), -1)
        dev = self.device
        meta = AttentionMetadata(None, torch.tensor(qsl, dtype=torch.int32, device=dev),
                                 torch.tensor(lens, dtype=torch.int32, device=dev), tables.to(dev),
                                 max(lens), max(lens), len(lens), False, lens, lens)

        def prefill():  # positions and slots as a step's: the op (in the dry pass's kernels;
            # there its launch may be skipped, so they start as valid values)
            ids = torch.zeros(sum(lens), dtype=torch.int64, device=dev)
            pos, slots = torch.zeros_like(ids), torch.full_like(ids, -1)
            self._rows_into(meta, pos, slots)
            meta.slot_mapping = slots
            hidden = self.model(ids, pos, self.kv_caches, self.attn.prepare(meta))
            self.model.compute_logits(hidden[-logit_rows:])
        return prefill

    @torch.inference_mode()
    def profile_peak_memory(self, max_num_batched_tokens: int) -> int:
        """Run a maximal prefill batch and return peak allocated bytes (CUDA only)."""
        t0 = time.perf_counter()
        tokens = min(max_num_batched_tokens, self.max_model_len * self.max_num_seqs)
        seq_len = min(tokens, self.max_model_len)
        num_seqs = -(-tokens // seq_len)
        blocks_per_seq = -(-seq_len // self.block_size)
        self.allocate_kv_cache(blocks_per_seq * num_seqs)
        lens = [seq_len] * (tokens // seq_len) + ([tokens % seq_len] if tokens % seq_len else [])
        prefill = self._prefill_forward(lens, blocks_per_seq, self.max_num_seqs)
        short = [lambda n=n: self._prefill_forward([n], blocks_per_seq)()
                 for n in SHORT_PREFILLS if n < seq_len]
        self._compile_ahead(prefill, *short)
        torch.cuda.reset_peak_memory_stats(self.device)
        prefill()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(self.device)
        self.kv_caches = []
        torch.cuda.empty_cache()
        log.debug("start-up: memory profiled on %d tokens in %.2f s", tokens,
                  time.perf_counter() - t0)
        return peak
