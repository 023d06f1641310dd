"""The real Scheduler (and its block manager) under random workloads, driven without a model:
``update`` gets made-up tokens for each sequence whose last token was computed (or, with async
scheduling, ``advance`` gives placeholders and ``resolve`` the tokens one step later)."""
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from litevllm.config import AGING_TOKENS_PER_S, SCHEDULING_POLICIES, SchedulerConfig
from litevllm.engine.block_manager import block_hash
from litevllm.engine.scheduler import PLACEHOLDER, Scheduler
from litevllm.engine.sequence import Sequence, SeqStatus
from litevllm.sampling_params import SamplingParams

PREFIXES = [[], [7] * 8, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]


class Driver:
    """The real Scheduler driven without a model: made-up tokens, optional lookahead (multi-step)
    and draft tokens with a made-up number accepted (speculative decoding)."""

    def __init__(self, num_blocks, block_size, max_num_seqs, max_tokens_per_step, chunked,
                 caching, max_model_len=64, async_scheduling=False, policy="fcfs"):
        self.sched = Scheduler(SchedulerConfig(max_num_seqs, max_tokens_per_step, chunked,
                                               scheduling_policy=policy),
                               num_blocks, block_size, caching, max_model_len, eos_token_ids=[10],
                               make_child=self._child)
        self.bm = self.sched.bm
        self.requests: dict[int, list[Sequence]] = {}   # live request -> its sequences
        self.finals = Counter()                          # request -> final outputs emitted
        self.admitted = 0
        self.next_id = 0
        # async scheduling: (sampled seqs, their tokens) of the step advanced with placeholders
        self.async_scheduling, self.inflight = async_scheduling, None

    def check_queue_order(self):
        """shortest-first: preempted sequences first, then prompts by length plus
        AGING_TOKENS_PER_S times their arrival time (written out here, apart from wait_key)."""
        if self.sched.config.scheduling_policy == "shortest-first":
            keys = [float("-inf") if s.metrics.num_preemptions
                    else s.num_prompt_tokens + AGING_TOKENS_PER_S * s.metrics.arrival_time
                    for s in self.sched.waiting]
            assert keys == sorted(keys), keys

    def add(self, prompt, n, max_tokens, arrival=None) -> bool:
        """``arrival``: monotonic seconds; default 1 ms after the last admission (a clock of
        its own: the queue order under shortest-first, and so hypothesis' replays, must not
        depend on how fast the test runs)."""
        if arrival is None:
            arrival = self.admitted * 1e-3
        try:
            self.sched.check_admissible(len(prompt), n)
        except ValueError:
            return False
        rid, self.admitted = self.admitted, self.admitted + 1
        self.next_id += 1
        s = Sequence(self.next_id, rid, prompt, SamplingParams(n=n, max_tokens=max_tokens), 0)
        s.metrics.arrival_time = arrival
        self.requests[rid] = [s]
        self.sched.add(s)
        return True

    def _child(self, parent, index):
        self.next_id += 1
        return Sequence(self.next_id, parent.request_id, parent.token_ids, parent.params, index)

    @staticmethod
    def token(s, j=0):
        return (s.seq_id * 31 + s.num_tokens + j) % 11

    def step(self, lookahead=0, draft_len=0):
        cfg, bm = self.sched.config, self.bm
        if draft_len:  # drafts read the tokens: verify steps are synchronous
            self.resolve()
        drafts = {s.seq_id: [self.token(s, j + 1) for j in range(draft_len)]
                  for s in self.sched.running if s.num_output_tokens} if draft_len else None
        batch = self.sched.schedule(lookahead, drafts)
        self.check_queue_order()
        assert batch.num_tokens <= cfg.max_num_batched_tokens
        assert batch.num_steps == 1 or not batch.drafts
        running = self.sched.running
        assert len(running) + sum(self.sched.will_fork(s) for s in running) <= cfg.max_num_seqs
        assert len(set(map(id, batch.seqs))) == len(batch.seqs)
        for s, n in zip(batch.seqs, batch.num_new_tokens):
            assert s.status is SeqStatus.RUNNING and n >= 1
            assert s.num_computed_tokens + n <= s.num_tokens
            if not cfg.enable_chunked_prefill and s.num_output_tokens == 0:
                assert n == s.num_tokens - s.num_computed_tokens  # prompts are never split
            # new KV (lookahead and drafts included) goes only into blocks this sequence owns
            # alone and that are not published
            ahead = len(batch.drafts.get(s.seq_id, ())) + batch.num_steps - 1
            for pos in range(s.num_computed_tokens, s.num_computed_tokens + n + ahead):
                block = s.block_table[pos // bm.block_size]
                assert bm.ref_count[block] == 1 and bm.hash_of[block] is None
        if not batch and self.sched.waiting:  # (async: waiting for tokens in flight)
            assert self.sched.running or self.inflight, "deadlock: nothing running, nothing admitted"
        self.sched.take_copies()
        sampled = {}
        for s, n in zip(batch.seqs, batch.num_new_tokens):
            if s.num_computed_tokens + n < s.num_tokens:
                continue
            draft = batch.drafts.get(s.seq_id)
            if draft:  # accept a made-up prefix, then the target's own token
                accepted = (s.seq_id + s.num_tokens) % (len(draft) + 1)
                sampled[s.seq_id] = draft[:accepted] + [self.token(s, 7)]
                continue
            for t in batch.sample_seqs(s):
                sampled[t.seq_id] = [self.token(t, j) for j in range(batch.num_steps)]
        if self.async_scheduling and not batch.drafts:  # as LLMEngine._step_async
            self.resolve()
            sample_seqs = [t for s in batch.seqs for t in batch.sample_seqs(s)
                           if t.seq_id in sampled]
            assert not self.sched.advance(batch, sample_seqs, batch.num_steps)
            self.inflight = (sample_seqs, [sampled[t.seq_id] for t in sample_seqs])
        else:
            self.resolve()
            assert not self.sched.update(batch, sampled)
        for s in batch.seqs:
            if s.request_id in self.requests:  # (async: settled by resolve meanwhile)
                self.requests[s.request_id].extend(batch.forks.get(s.seq_id, []))
            if s.status is SeqStatus.RUNNING:  # lookahead blocks past the tokens rolled back
                assert len(s.block_table) <= bm.blocks_needed(s.num_tokens)
        self.settle(s.request_id for s in batch.seqs)

    def settle(self, rids):
        """Count the final outputs of the requests ``rids`` whose sequences all finished."""
        for rid in set(rids):
            seqs = self.requests.get(rid)
            if seqs and len(seqs) == seqs[0].params.n and all(x.is_finished for x in seqs):
                self.finals[rid] += 1
                del self.requests[rid]

    def resolve(self):
        if self.inflight is not None:
            self.sched.resolve(*self.inflight)
            self.settle(s.request_id for s in self.inflight[0])  # finished by stop tokens
            self.inflight = None

    def finish(self, s, reason):
        self.resolve()  # stop strings are found in the tokens read back
        if s.is_finished:
            return  # by a stop token there
        self.sched.finish(s, reason)
        seqs = self.requests[s.request_id]
        forked = len(seqs) == s.params.n or reason == "abort"
        if forked and all(x.is_finished for x in seqs):
            self.finals[s.request_id] += 1
            del self.requests[s.request_id]

    def abort(self, rid):
        self.resolve()  # LLMEngine.abort_request reads the step in flight first
        if rid not in self.requests:
            return  # it finished there
        for s in self.requests[rid]:
            if not s.is_finished:
                self.sched.finish(s, "abort")
        self.finals[rid] += 1
        del self.requests[rid]

    def check_books(self):
        bm = self.bm
        live = [s for seqs in self.requests.values() for s in seqs if not s.is_finished]
        refs = Counter(b for s in live for b in s.block_table)
        assert [refs[b] for b in range(bm.num_blocks)] == bm.ref_count
        assert set(bm.free) == {b for b in range(bm.num_blocks) if bm.ref_count[b] == 0}
        assert set(map(id, self.sched.running)) | set(map(id, self.sched.waiting)) == set(map(id, live))
        for s in self.sched.waiting:
            assert s.status is SeqStatus.WAITING and not s.block_table and s.num_computed_tokens == 0
        for s in self.sched.running:
            assert len(s.block_table) >= bm.blocks_needed(s.num_computed_tokens)
        for s in live:  # published blocks hold real tokens, never placeholders
            assert PLACEHOLDER not in s.token_ids[:s.num_committed_blocks * bm.block_size]
            parent = None
            for i, h in enumerate(s.block_hashes):  # hashes are of the tokens now there
                parent = block_hash(parent, tuple(s.token_ids[i * bm.block_size:(i + 1) * bm.block_size]))
                assert h == parent
            if self.inflight is None:
                assert PLACEHOLDER not in s.token_ids

    def drain(self, max_steps=5000):
        for _ in range(max_steps):
            if not self.sched.has_unfinished():
                break
            self.step()
            self.check_books()
        self.resolve()
        self.check_books()
        assert not self.sched.has_unfinished(), "requests never finished"
        assert sum(self.bm.ref_count) == 0 and self.bm.num_free_blocks == self.bm.num_blocks
        assert not self.requests
        assert sorted(self.finals) == list(range(self.admitted))
        assert set(self.finals.values()) <= {1}


class SchedulerMachine(RuleBasedStateMachine):
    @initialize(num_blocks=st.integers(3, 24), block_size=st.sampled_from([2, 4, 8]),
                max_num_seqs=st.integers(1, 6), budget=st.integers(1, 48),
                chunked=st.booleans(), caching=st.booleans(), async_scheduling=st.booleans(),
                policy=st.sampled_from(SCHEDULING_POLICIES))
    def setup(self, num_blocks, block_size, max_num_seqs, budget, chunked, caching,
              async_scheduling, policy):
        self.eng = Driver(num_blocks, block_size, max_num_seqs, budget, chunked, caching,
                          async_scheduling=async_scheduling, policy=policy)

    @rule(prefix=st.sampled_from(PREFIXES), tail=st.lists(st.integers(0, 20), min_size=1,
                                                          max_size=20),
          n=st.integers(1, 3), max_tokens=st.integers(1, 12))
    def add(self, prefix, tail, n, max_tokens):
        self.eng.add(prefix + tail, n, max_tokens)

    @rule(lookahead=st.sampled_from([0, 0, 1, 3]), draft_len=st.sampled_from([0, 0, 1, 3]))
    def step(self, lookahead, draft_len):
        self.eng.step(lookahead, draft_len)

    @precondition(lambda self: self.eng.requests)
    @rule(data=st.data())
    def abort(self, data):
        self.eng.abort(data.draw(st.sampled_from(sorted(self.eng.requests))))

    @precondition(lambda self: any(s.num_output_tokens for s in self.eng.sched.running))
    @rule(data=st.data())
    def finish_one(self, data):  # a stop token or string in a sequence's output
        decoding = [s for s in self.eng.sched.running if s.num_output_tokens]
        self.eng.finish(data.draw(st.sampled_from(decoding)), "stop")

    @precondition(lambda self: self.eng.sched.running)
    @rule(data=st.data())
    def preempt(self, data):
        self.eng.sched.preempt(data.draw(st.sampled_from(self.eng.sched.running)))

    @invariant()
    def books_balance(self):
        if hasattr(self, "eng"):
            self.eng.check_books()
            self.eng.check_queue_order()

    def teardown(self):
        if hasattr(self, "eng"):
            self.eng.drain()


TestSchedulerMachine = SchedulerMachine.TestCase
TestSchedulerMachine.settings = settings(max_examples=80, stateful_step_count=40, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=60, deadline=None)
@given(prompts=st.lists(st.tuples(st.sampled_from(PREFIXES),
                                  st.lists(st.integers(0, 20), min_size=1, max_size=30),
                                  st.integers(1, 3), st.integers(1, 20)), min_size=1, max_size=8),
       num_blocks=st.integers(2, 16), budget=st.integers(1, 32), max_num_seqs=st.integers(1, 4),
       async_scheduling=st.booleans(), policy=st.sampled_from(SCHEDULING_POLICIES))
def test_everything_finishes_under_pressure(prompts, num_blocks, budget, max_num_seqs,
                                            async_scheduling, policy):
    """Tiny caches and budgets: requests get preempted and recomputed, yet all finish once."""
    eng = Driver(num_blocks, 4, max_num_seqs, budget, True, True, async_scheduling=async_scheduling,
                 policy=policy)
    for prefix, tail, n, max_tokens in prompts:
        eng.add(prefix + tail, n, max_tokens)
    eng.drain()


def test_preemption_order_and_requeue():
    """Out of blocks, the newest running sequence is preempted and requeued at the front."""
    eng = Driver(num_blocks=4, block_size=4, max_num_seqs=4, max_tokens_per_step=64,
                     chunked=True, caching=False)
    eng.add([1] * 7, 1, 20)
    eng.add([2] * 7, 1, 20)
    eng.step()                              # both prefilled: 2 blocks each, cache full
    old, new = eng.sched.running
    eng.step()                              # both decode into their second block (pos 7)
    batch = eng.sched.schedule()            # position 8 needs a third block: `new` yields
    assert batch.preempted == [new] and batch.seqs == [old]
    assert eng.sched.waiting[0] is new and new.metrics.num_preemptions == 1
    assert not new.block_table and new.num_computed_tokens == 0


def test_shortest_first_policy_orders_waiting_prompts():
    """shortest-first admits the shortest waiting prompt first (ties in arrival order), and a
    preempted sequence still resumes before any new prompt."""
    eng = Driver(num_blocks=4, block_size=4, max_num_seqs=4, max_tokens_per_step=64,
                 chunked=True, caching=False, policy="shortest-first")
    eng.add([1] * 7, 1, 20, arrival=0.0)    # one arrival time: no aging between them
    eng.add([2] * 6, 1, 20, arrival=0.0)
    eng.step()                              # both prefilled: 2 blocks each, cache full
    eng.step()
    for prompt in ([3] * 9, [4] * 2, [5] * 5, [6] * 2):
        eng.add(prompt, 1, 4, arrival=0.0)
    assert [s.token_ids[0] for s in eng.sched.waiting] == [4, 6, 5, 3]
    old, new = eng.sched.running            # the 6-token prompt was admitted first
    assert old.token_ids[0] == 2
    batch = eng.sched.schedule()            # position 8 needs a third block: `new` yields
    assert batch.preempted == [new]
    assert [s.token_ids[0] for s in eng.sched.waiting] == [1, 4, 6, 5, 3]
    # a forked child (n > 1, never admitted from the queue itself) preempted: still first
    forks = Driver(num_blocks=6, block_size=4, max_num_seqs=4, max_tokens_per_step=64,
                   chunked=True, caching=False, policy="shortest-first")
    forks.add([7] * 7, 3, 20)
    while not any(s.index for s in forks.sched.running):
        forks.step()
    child = next(s for s in forks.sched.running if s.index)
    forks.sched.preempt(child)
    forks.add([8] * 5, 1, 4, arrival=0.0)
    forks.add([9] * 2, 1, 4, arrival=0.0)
    assert forks.sched.waiting[0] is child
    forks.check_queue_order()
    fcfs = Driver(4, 4, 4, 64, True, False)
    for prompt in ([3] * 9, [4] * 2):
        fcfs.add(prompt, 1, 4)
    assert [s.token_ids[0] for s in fcfs.sched.waiting] == [3, 4]


def test_shortest_first_ages_waiting_prompts():
    """A prompt of l tokens arriving after one of L tokens goes first only if it arrives less
    than (L - l) / AGING seconds later; the scheduler admits the queue's head."""
    margin = (200 - 10) / AGING_TOKENS_PER_S
    for later_by, short_first in ((0.9 * margin, True), (1.1 * margin, False)):
        eng = Driver(num_blocks=64, block_size=4, max_num_seqs=1, max_tokens_per_step=256,
                     chunked=True, caching=False, max_model_len=256, policy="shortest-first")
        assert eng.add([1] * 200, 1, 4, arrival=100.0)
        assert eng.add([2] * 10, 1, 4, arrival=100.0 + later_by)
        batch = eng.sched.schedule()  # max_num_seqs 1: the head alone is admitted
        assert [s.token_ids[0] for s in batch.seqs] == ([2] if short_first else [1])


def test_shortest_first_engine_gives_the_same_tokens(llama_dir):
    """The policy changes when prompts run, not what they produce (greedy, the real engine)."""
    from litevllm import LLM, SamplingParams as SP
    # 60, 3, 30 and 12 tokens: aging would need a submission 18+ ms slow to reorder them
    prompts = [[5, 9, 13] * k for k in (20, 1, 10, 4)]
    outs = {}
    for policy in SCHEDULING_POLICIES:
        llm = LLM(str(llama_dir), block_size=8, max_num_seqs=2, max_num_batched_tokens=16,
                  scheduling_policy=policy)
        got = llm.generate([{"prompt_token_ids": p} for p in prompts],
                           SP(max_tokens=6, temperature=0.0), use_tqdm=False)
        outs[policy] = [o.outputs[0].token_ids for o in got]
        started = [o.metrics.first_scheduled_time for o in got]
        by_start = sorted(range(len(prompts)), key=started.__getitem__)
        want = sorted(range(len(prompts)), key=lambda i: len(prompts[i])) \
            if policy == "shortest-first" else list(range(len(prompts)))
        assert by_start == want
    assert outs["fcfs"] == outs["shortest-first"]


# the real engine around a fake model: random logits ------------------------------------------
OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(1, 30), st.integers(1, 3), st.integers(1, 10),
              st.sampled_from([0.0, 1.0]), st.booleans()),
    st.tuples(st.just("step")), st.tuples(st.just("step")), st.tuples(st.just("step")),
    st.tuples(st.just("abort"), st.integers(0, 20))), max_size=40)


@settings(max_examples=int(__import__("os").environ.get("FAKE_EXAMPLES", 25)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, seed=st.integers(0, 2**16))
def test_engine_with_fake_model(llama_dir, ops, seed):
    import torch
    from litevllm import LLM
    eng = LLM(str(llama_dir), block_size=8, num_gpu_blocks_override=6,
              max_num_seqs=4, max_num_batched_tokens=16).engine
    gen = torch.Generator().manual_seed(seed)
    vocab = eng.hf_config.vocab_size

    def fake_model(inputs, logits):
        for slot in inputs.meta.slot_mapping.tolist():  # wrote only into unshared blocks
            assert eng.block_manager.ref_count[slot // 8] == 1
        return torch.randn(len(inputs.logit_rows), vocab, generator=gen)
    eng.add_logits_observer(fake_model)

    added, finals = {}, Counter()

    def collect(outs):
        for out in outs:
            assert out.request_id in added and not finals[out.request_id]
            if out.finished:
                finals[out.request_id] += 1
                n, max_tokens, plp = added[out.request_id]
                assert len(out.outputs) == n
                assert all(c.finish_reason in ("stop", "length", "abort") for c in out.outputs)
                assert all(len(c.token_ids) <= max_tokens for c in out.outputs)
                if plp and out.outputs[0].finish_reason != "abort":
                    assert len(out.prompt_logprobs) == len(out.prompt_token_ids)

    for op in ops:
        if op[0] == "add":
            _, length, n, max_tokens, temp, plp = op
            rid = str(len(added))
            params = SamplingParams(n=n, max_tokens=max_tokens, temperature=temp, seed=1,
                                    prompt_logprobs=1 if plp else None)
            try:
                eng.add_request(rid, {"prompt_token_ids": list(range(3, 3 + length))}, params)
            except ValueError:
                continue
            added[rid] = (n, max_tokens, plp)
        elif op[0] == "step":
            collect(eng.step())
        elif str(op[1]) in eng.requests:
            collect([eng.abort_request(str(op[1]))])
    for _ in range(2000):
        if not eng.has_unfinished_requests():
            break
        collect(eng.step())
    assert set(finals) == set(added) and set(finals.values()) <= {1}
    assert sum(eng.block_manager.ref_count) == 0
    assert eng.block_manager.num_free_blocks == eng.num_blocks
