"""Piecewise CUDA graphs (engine/piecewise.py) without CUDA: buckets, the attention split, the
padding rows, the fallback for models that bypass the backend. Graph replay itself is checked
against eager runs in tests/gpu/test_piecewise_gpu.py."""
import contextlib
import dataclasses

import pytest
import torch

from litevllm.attention.backend import AttentionMetadata
from litevllm.attention.torch_backend import TorchAttentionBackend
from litevllm.engine.model_runner import ModelRunner
from litevllm.engine.piecewise import PiecewiseGraphs, token_buckets, unowned_view
from litevllm.model.decoder import LiteAttention, LiteForCausalLM
from litevllm.model.loader import init_dummy_weights
from litevllm.testing import model_context, tiny_config


def test_buckets_cover_every_size_with_little_padding():
    sizes = token_buckets(2048)
    assert sizes[:5] == [16, 32, 64, 128, 256] and sizes[-1] == 2048
    assert sizes[5:9] == [320, 384, 448, 512]
    assert token_buckets(100) == [16, 32, 64, 100] and token_buckets(8) == [8]
    assert token_buckets(1000)[-1] == 1000
    pw = PiecewiseGraphs.__new__(PiecewiseGraphs)
    pw.buckets = sizes
    for n in range(1, 2049):
        b = pw.bucket(n)
        assert b >= n and (b <= 16 or b <= 2 * n) and (n <= 256 or b <= 1.25 * n)
    assert pw.bucket(2049) is None


def test_unowned_view_shares_memory_with_the_same_layout():
    base = torch.arange(40.0).view(5, 8)
    t = base[:, 2:5]
    w = unowned_view(t)
    assert w.data_ptr() == t.data_ptr() and w.stride() == t.stride() and torch.equal(w, t)
    base.add_(1)
    assert torch.equal(w, t)


def _tiny(model_cls=LiteForCausalLM):
    ctx = model_context("cpu")
    model = model_cls(tiny_config("LlamaForCausalLM"), ctx).eval()
    init_dummy_weights(model, 0)
    heads, dim = model.kv_shape()
    caches = [ctx.attn.allocate_kv_cache(4, heads, dim) for _ in range(model.num_kv_layers())]
    return model, ctx.attn, caches


def _mixed_meta():
    """Sequence 0: 3 cached tokens + 2 new (block 0); sequence 1: a 6-token prefill (block 1)."""
    lens, qlens = [5, 6], [2, 6]
    return AttentionMetadata(
        slot_mapping=torch.tensor([3, 4] + list(range(16, 22))),
        query_start_loc=torch.tensor([0, 2, 8], dtype=torch.int32),
        seq_lens=torch.tensor(lens, dtype=torch.int32),
        block_tables=torch.tensor([[0], [1]], dtype=torch.int32),
        max_query_len=6, max_seq_len=6, num_seqs=2, is_decode=False,
        query_lens_cpu=qlens, seq_lens_cpu=lens)


@torch.inference_mode()
def test_padded_split_run_matches_eager_and_leaves_other_slots_alone():
    """The piecewise schedule run eagerly: the model over a padded 16-row bucket with stale ids
    and positions in the padding, attention on the 8 real rows only. Real rows and the KV cache
    match a plain eager run; padded rows never reach the cache (the graphs' slots: -1 there,
    where the rotary op stores k and v)."""
    model, attn, caches = _tiny()
    ids, pos = torch.tensor([7, 9, 11, 12, 13, 14, 15, 16]), torch.tensor([3, 4, 0, 1, 2, 3, 4, 5])
    for c in caches:
        c.normal_()  # stands for earlier steps' keys and values (tokens 0-2 of sequence 0)
    ref_caches = [c.clone() for c in caches]
    want = model(ids, pos, ref_caches, _mixed_meta())

    pw = PiecewiseGraphs(model, attn, torch.device("cpu"), 64)
    pw.ids.random_(0, 100)
    pw.pos.random_(0, 60)
    pw.ids[:8], pw.pos[:8] = ids, pos
    meta, calls = _mixed_meta(), []
    pw.slots[:8] = meta.slot_mapping
    graph_meta = dataclasses.replace(meta, slot_mapping=pw.slots[:16])

    def attention(spec, q, k, v, cache):
        calls.append(q.shape[0])
        out = pw._out_view(16, q.shape[1] * q.shape[2], q.dtype)
        out[:8] = type(attn).forward(attn, spec, q[:8], k[:8], v[:8], cache, meta)
        return out

    got = pw._run(16, caches, graph_meta, attention)
    assert calls == [16] * len(caches) and got.shape[0] == 16
    torch.testing.assert_close(got[:8], want, atol=1e-5, rtol=1e-5)
    for c, r in zip(caches, ref_caches):
        torch.testing.assert_close(c, r, atol=1e-5, rtol=1e-5)
    assert "forward" not in vars(attn)  # the stand-in is gone after the run


class NoopGraph:
    """A CUDA graph stand-in (capture and replay do nothing); ``fail`` makes capture_begin
    raise."""
    fail = False

    def capture_begin(self, pool=None):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")

    def capture_end(self):
        pass

    def replay(self):
        pass


@pytest.fixture
def fake_cuda(monkeypatch):
    class Stream:
        def wait_stream(self, other):
            pass
    for name, value in (("CUDAGraph", NoopGraph), ("Stream", lambda *a: Stream()),
                        ("stream", lambda s: contextlib.nullcontext()),
                        ("graph_pool_handle", lambda: (0, 0)), ("synchronize", lambda *a: None),
                        ("current_stream", lambda *a: Stream())):
        monkeypatch.setattr(torch.cuda, name, value)
    return NoopGraph


@torch.inference_mode()
def test_start_up_capture_takes_the_largest_buckets_first_within_its_budget(fake_cuda):
    model, attn, caches = _tiny()
    pw = PiecewiseGraphs(model, attn, torch.device("cpu"), 64)
    pw.capture(caches, _mixed_meta(), budget_s=0.0)
    assert sorted(pw.pieces) == [64]
    pw.capture(caches, _mixed_meta())
    assert sorted(pw.pieces) == [16, 32, 64] and not pw.disabled
    assert all(len(p.graphs) == len(caches) + 1 for p in pw.pieces.values())
    captured = dict(pw.pieces)
    ids, pos = torch.tensor([7, 9, 11, 12, 13, 14, 15, 16]), torch.tensor([3, 4, 0, 1, 2, 3, 4, 5])
    assert pw.forward(ids, pos, caches, _mixed_meta()).shape[0] == 8
    assert pw.pieces == captured  # replayed, not captured again
    assert "forward" not in vars(attn)


@torch.inference_mode()
def test_pieces_read_the_steps_slots_and_minus_one_past_them(fake_cuda):
    """The pieces' static slot buffer, where the graphs' rotary op stores k/v: capture sees
    only -1; each replay the step's slots, then -1 to the bucket's end (a longer earlier step's
    slots would be stale); the eager attention between pieces is told k/v are stored."""
    model, attn, caches = _tiny()
    pw = PiecewiseGraphs(model, attn, torch.device("cpu"), 64)
    seen = []

    class Backend(type(attn)):
        rotary_stores_kv = True  # a forward of its own opts in anew

        def forward(self, spec, q, k, v, kv_cache, meta, out=None):
            seen.append((spec.kv_stored, pw.slots[:16].tolist()))
            return torch.zeros(q.shape[0], q.shape[1] * q.shape[2])
    attn.__class__ = Backend
    pw.capture(caches, _mixed_meta())  # captured while every slot is -1: nothing stored
    assert all(c.abs().sum() == 0 for c in caches)
    meta = _mixed_meta()
    ids, pos = torch.arange(12), torch.arange(12) % 5
    meta.slot_mapping = torch.arange(30, 42)
    pw.forward(ids, pos, caches, meta)
    assert seen[-1] == (True, list(range(30, 42)) + [-1] * 4)
    meta.slot_mapping = torch.tensor([5, 6, 7, 8])
    pw.forward(ids[:4], pos[:4], caches, meta)
    assert seen[-1] == (True, [5, 6, 7, 8] + [-1] * 12)


@torch.inference_mode()
@pytest.mark.parametrize("takes_out", [True, False, "ignores"])
def test_replay_writes_attention_into_the_static_buffer(fake_cuda, takes_out):
    """A backend whose forward takes ``out`` writes each layer's attention straight into the
    buffer the next graph reads; one without it returns a tensor that is copied there."""
    model, attn, caches = _tiny()
    pw = PiecewiseGraphs(model, attn, torch.device("cpu"), 64)
    ids, pos = torch.tensor([7, 9, 11, 12, 13, 14, 15, 16]), torch.tensor([3, 4, 0, 1, 2, 3, 4, 5])
    pw.forward(ids, pos, caches, _mixed_meta())  # captures the 16 bucket (no-op graphs)
    calls, outs, got = pw.pieces[16].calls, [], []

    def result(q):  # stands for layer i's attention: i + 1 everywhere
        return torch.full((q.shape[0], q.shape[1] * q.shape[2]), float(len(outs)))

    def read_previous():  # the buffer as the next graph would read it
        if outs:
            got.append(calls[len(outs) - 1].out[:8].clone())

    class Backend(type(attn)):
        if takes_out:
            def forward(self, spec, q, k, v, kv_cache, meta, out=None):
                read_previous()
                outs.append(out)
                # "ignores": takes out but returns a new tensor (the engine copies it)
                return result(q) if takes_out == "ignores" else out.copy_(result(q))
        else:
            def forward(self, spec, q, k, v, kv_cache, meta):
                read_previous()
                outs.append(None)
                return result(q)
    attn.__class__ = Backend
    pw.forward(ids, pos, caches, _mixed_meta())
    got.append(calls[-1].out[:8].clone())
    assert len(got) == len(calls) > 1
    for i, (call, out, g) in enumerate(zip(calls, outs, got)):
        assert (g == i + 1).all()
        if takes_out:
            assert out.data_ptr() == call.out.data_ptr() and out.shape[0] == 8


@torch.inference_mode()
def test_a_failed_capture_turns_piecewise_off(fake_cuda, monkeypatch, caplog):
    monkeypatch.setattr(fake_cuda, "fail", True)
    model, attn, caches = _tiny()
    pw = PiecewiseGraphs(model, attn, torch.device("cpu"), 64)
    ids, pos = torch.tensor([7, 9, 11, 12, 13, 14, 15, 16]), torch.tensor([3, 4, 0, 1, 2, 3, 4, 5])
    assert pw.forward(ids, pos, caches, _mixed_meta()) is None
    assert "capturing 16 tokens failed" in caplog.text
    assert pw.disabled and not pw.pieces and "forward" not in vars(attn)
    pw.capture(caches, _mixed_meta())
    assert not pw.pieces


class Bypass(LiteAttention):
    """Runs attention without the engine's backend object (a model the split cannot see)."""

    def forward(self, positions, x, kv_cache, meta):
        return self.o_proj(x[:, :self.q_size])


def test_dry_run_rejects_models_that_bypass_the_backend():
    class BypassLM(LiteForCausalLM):
        attention_cls = Bypass
    model, attn, caches = _tiny(BypassLM)
    pw = PiecewiseGraphs(model, attn, torch.device("cpu"), 64)
    graph_meta = dataclasses.replace(_mixed_meta(), slot_mapping=pw.slots[:16])  # all -1
    with torch.inference_mode(), pytest.raises(RuntimeError, match="0 attention calls"):
        pw._dry(16, caches, graph_meta)
    plain, attn, caches = _tiny()
    with torch.inference_mode():
        PiecewiseGraphs(plain, attn, torch.device("cpu"), 64)._dry(16, caches, graph_meta)


def test_cpu_runner_stays_eager():
    model, attn, _ = _tiny()
    runner = ModelRunner(model, attn, torch.device("cpu"), 16, 128, 4, True, piecewise_tokens=64)
    assert runner.piecewise is None and not runner.use_cuda_graphs


def test_option_rejects_negative_sizes():
    from litevllm.config import engine_config
    assert engine_config("m").max_piecewise_graph_tokens == 2048  # on by default
    assert engine_config("m", max_piecewise_graph_tokens=0).max_piecewise_graph_tokens == 0
    with pytest.raises(ValueError, match="max_piecewise_graph_tokens must be >= 0"):
        engine_config("m", max_piecewise_graph_tokens=-1)


class EagerPieces(PiecewiseGraphs):
    """The piecewise schedule without graphs (CPU): the model over the padded bucket, stale
    ids and positions in the padding, attention on the real rows only."""

    def forward(self, input_ids, positions, kv_caches, meta):
        n = input_ids.shape[0]
        size = self.bucket(n)
        if size is None:
            return None
        self.sizes.append(size)
        self.ids[:n], self.pos[:n] = input_ids, positions
        self.slots[:n], self.slots[n:size] = meta.slot_mapping, -1  # as the graphs see them
        graph_meta = dataclasses.replace(meta, slot_mapping=self.slots[:size])
        backend = self.attn

        def attention(spec, q, k, v, cache):
            out = self._out_view(size, q.shape[1] * q.shape[2], q.dtype)
            out[:n] = type(backend).forward(backend, spec, q[:n], k[:n], v[:n], cache, meta)
            return out
        return self._run(size, kv_caches, graph_meta, attention)[:n]


def test_engine_steps_through_padded_pieces_match_plain_runs(llama_dir):
    """Chunked prompts, mixed batches and n-gram verify steps through the runner's piecewise
    hook give the same greedy tokens as a plain engine."""
    from litevllm import LLM, SamplingParams
    loop = [7, 8, 9, 10, 11, 12] * 6
    prompts = [{"prompt_token_ids": p} for p in (loop, list(range(20, 75)), [40] * 9)]
    params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    common = dict(block_size=8, max_num_seqs=4, max_num_batched_tokens=32, seed=0)
    want = [o.outputs[0].token_ids for o in LLM(str(llama_dir), **common).generate(prompts, params)]
    spec = {"method": "ngram", "num_speculative_tokens": 3, "min_acceptance_rate": 0.01}
    llm = LLM(str(llama_dir), speculative_config=spec, **common)
    runner = llm.engine.runner
    runner.piecewise = pw = EagerPieces(runner.model, runner.attn, runner.device, 32)
    pw.sizes = []
    got = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
    assert got == want
    assert llm.engine.stats()["spec_num_draft_tokens"] > 0 and {16, 32} <= set(pw.sizes)


class PaddedMetaBackend(TorchAttentionBackend):
    """The torch backend claiming ``varlen_in_graph``: whole-step graphs (no-op on the CPU)."""
    varlen_in_graph = True


@torch.inference_mode()
def test_whole_step_graphs_replay_once_with_padded_metadata(fake_cuda):
    """A backend that attends inside graphs: one graph per bucket, attention only while
    capturing (into the shared output buffer), and each step's metadata loaded into static
    buffers padded to the bucket: slot -1 past the step's tokens, padding sequences starting
    at the step's token count, stale block-table rows left alone."""
    model, attn, caches = _tiny()
    attn.__class__ = PaddedMetaBackend
    calls = []
    real = PaddedMetaBackend.forward

    def counted(self, spec, q, k, v, kv_cache, meta, out=None):
        calls.append((q.shape[0], meta.num_seqs, meta.max_query_len, out is not None))
        return out if out is not None else real(self, spec, q, k, v, kv_cache, meta)
    PaddedMetaBackend.forward = counted
    try:
        rows = []
        pw = PiecewiseGraphs(model, attn, torch.device("cpu"), 64, max_seqs=4, max_blocks=3,
                             rows=lambda meta, pos, slots: rows.append(meta.num_seqs))
        assert pw.whole and PiecewiseGraphs(model, attn, torch.device("cpu"), 64).whole is False
        pw.tables.fill_(9)
        ids, pos = torch.tensor([7, 9, 11, 12, 13, 14, 15, 16]), torch.tensor([3, 4, 0, 1, 2, 3, 4, 5])
        assert pw.forward(ids, pos, caches, _mixed_meta()).shape[0] == 8
        piece = pw.pieces[16]
        assert len(piece.graphs) == 1 and not piece.calls and piece.out is pw._out
        # dry run + capture, each layer once; static metadata sized by the bucket
        assert calls == [(16, 4, 16, True)] * (2 * len(caches))
        assert rows == [4, 4]  # the rows op runs in the dry run and in the capture, not eagerly
        calls.clear()
        pw.forward(ids, pos, caches, _mixed_meta())
        assert not calls and pw.pieces[16] is piece  # replayed: attention lives in the graph
        assert rows == [4, 4]
        pw._rows = PiecewiseGraphs(model, attn, torch.device("cpu"), 64)._rows  # the torch op
    finally:
        PaddedMetaBackend.forward = real
    # the graph's first op (no-op graphs here: run it as a replay would) gives each row its
    # position and slot from the static metadata; padding rows position 0, slot -1
    pw._rows(pw._static_meta(16), pw.pos[:16], pw.slots[:16])
    assert pw.slots[:16].tolist() == [3, 4, *range(16, 22)] + [-1] * 8
    assert pw.pos[:16].tolist() == [3, 4, *range(6)] + [0] * 8
    assert [t.tolist() for t in pw.rows(8)] == [[3, 4, *range(6)], [3, 4, *range(16, 22)]]
    assert pw.qsl.tolist() == [0, 2, 8, 8, 8] and pw.seq_lens[:2].tolist() == [5, 6]
    assert pw.tables[:2, 0].tolist() == [0, 1] and (pw.tables[:2, 1:] == 9).all()
    assert (pw.tables[2:] == 9).all()
    too_many = _mixed_meta()
    too_many.num_seqs = 5  # more sequences than the buffers hold: eager
    assert pw.forward(ids, pos, caches, too_many) is None
