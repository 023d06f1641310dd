"""The engine: requests in, one scheduled model step at a time, outputs out."""
from __future__ import annotations

import logging
import os
import random
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path
from typing import Callable

from litevllm.engine.collector import freeze_imports, paused

with paused():  # torch and the engine modules load without cyclic collections (collector.py)
    import torch
    from litevllm.attention.backend import build_backend
    from litevllm.config import (DEFAULT_GRAPH_STEPS, EngineConfig, resolve_dtype,
                                 resolve_kv_cache_dtype)
    from litevllm.engine.host_tensors import HostCopy, int_tensor, to_device
    from litevllm.engine.inflight import LaunchedStep, StepResult, feed
    from litevllm.engine.model_runner import ModelRunner
    from litevllm.engine.output_processor import OutputProcessor, Request
    from litevllm.engine.precompile import Precompiler, prefetch_triton, triton_cache_is_empty
    from litevllm.engine.request_check import check_request
    from litevllm.engine.sampler import LaunchedSample, Sampler
    from litevllm.engine.scheduler import Scheduler
    from litevllm.engine.sequence import Sequence, SeqStatus
    from litevllm.engine.speculative import SpeculativeDecoder
    from litevllm.formats.dist_map import cached_packages_distributions
    from litevllm.formats.hf_config import config_imports
    from litevllm.formats.import_structure import cached_import_structures
    from litevllm.model.context import ModelContext
    from litevllm.model.decoder import LiteAttention
    from litevllm.model.loader import init_dummy_weights, load_weights
    from litevllm.ops import Ops, pick_attention_backend
    from litevllm.outputs import RequestOutput
    from litevllm.plugins import PluginError, get_plugin_manager, quant_install_hint
    from litevllm.sampling_params import SamplingParams
    from litevllm.structured.manager import StructuredOutputManager

log = logging.getLogger("litevllm")


def resolve_model_path(model: str) -> Path:
    """A local path, or a short name registered by a plugin (``register_model_aliases``)."""
    path = Path(model).expanduser()
    if path.exists():
        return path
    manager = get_plugin_manager()
    resolved = manager.resolve_alias(str(model))
    if resolved is not None:
        return Path(resolved)
    aliases = ", ".join(manager.names("model_aliases")) or "none installed"
    raise FileNotFoundError(f"model path '{model}' does not exist and is not a known model "
                            f"alias (aliases: {aliases}{manager.not_loaded()})")


class LLMEngine:
    def __new__(cls, *args, **kwargs):
        freeze_imports()  # before the engine exists: a frozen engine's cycles are never freed
        return super().__new__(cls)

    def __init__(self, config: EngineConfig):
        with paused():  # construction allocates much and frees little (collector.py)
            self._start(config)

    def _start(self, config: EngineConfig):
        self.config = config
        manager = get_plugin_manager()
        self.path = resolve_model_path(config.model)
        fmt = manager.checkpoint_format(self.path)(self.path)
        cuda = config.torch_device().type == "cuda"
        # asked first: the prefetch thread soon writes the CUDA utility module to Triton's cache
        cold = cuda and triton_cache_is_empty()
        if cuda:
            prefetch_triton()
        # its processes start now, to be ready when the kernels are known
        precompiler = Precompiler.start(config.torch_device(), cold)
        # transformers' first import reads both
        with cached_packages_distributions(), cached_import_structures():
            self.hf_config = fmt.load_config()
        archs = getattr(self.hf_config, "architectures", None) or []
        if not archs:
            raise PluginError(f"{self.path}: config names no architecture ('architectures' is empty)")
        model_cls = manager.model_class(archs[0])
        self.device = config.torch_device()
        self.dtype = resolve_dtype(config.dtype, getattr(self.hf_config, "dtype", None)
                                   or vars(self.hf_config).get("torch_dtype"), self.device)
        limit = getattr(self.hf_config, "max_position_embeddings", None) or 4096
        self.max_model_len = config.max_model_len or limit
        if self.max_model_len > limit:
            log.warning("max_model_len=%d is beyond the model's max_position_embeddings=%d",
                        self.max_model_len, limit)
        self.ops = ops = Ops(config.kernels, self.device.type, manager)
        self.kv_cache_dtype = resolve_kv_cache_dtype(config.cache.kv_cache_dtype, self.dtype)
        attn = build_backend(pick_attention_backend(manager, config.kernels, self.device.type),
                             self.device, self.dtype, config.cache.block_size,
                             self.kv_cache_dtype)
        quant = self._quant_config(manager, fmt)
        fmt.set_quantization(quant)
        ctx = ModelContext(ops, attn, quant, self.dtype, self.device, self.max_model_len)
        torch.manual_seed(config.seed)
        with torch.device(self.device):
            self.model = model_cls(self.hf_config, ctx).eval()
        if config.load_format == "dummy":
            init_dummy_weights(self.model, config.seed)
        else:
            load_weights(self.model, fmt.iter_tensors(self.dtype))
        if self.kv_cache_dtype != self.dtype:
            specs = [m.spec for m in self.model.modules() if isinstance(m, LiteAttention)]
            if all((s.k_scale, s.v_scale) == (1.0, 1.0) for s in specs):
                log.warning("fp8 KV cache with scales 1.0: the checkpoint has no KV-cache "
                            "scales (self_attn.k_scale/v_scale or k_proj/v_proj.output_scale)")
        self.tokenizer = self._load_tokenizer(fmt)
        sched = config.scheduler
        self.runner = ModelRunner(self.model, attn, self.device, config.cache.block_size,
                                  self.max_model_len, sched.max_num_seqs, not config.enforce_eager,
                                  min(config.max_piecewise_graph_tokens, sched.max_num_batched_tokens),
                                  precompiler, ops.positions_and_slots)
        self.num_blocks = self._num_blocks()
        self.runner.allocate_kv_cache(self.num_blocks)
        self.scheduler = Scheduler(sched, self.num_blocks, config.cache.block_size,
                                   config.cache.enable_prefix_caching, self.max_model_len,
                                   self._eos_ids(), self._make_child)
        self.output = OutputProcessor(self.tokenizer, self.scheduler)
        self.structured = StructuredOutputManager(manager, self.tokenizer, self.hf_config.vocab_size,
                                                  sorted(self.scheduler.eos_token_ids))
        # the longest sequence the KV cache can hold alone; longer ones finish with "length"
        self.max_seq_len = self.scheduler.max_seq_len
        if self.max_seq_len < self.max_model_len:
            log.warning("the KV cache holds only %d tokens, fewer than max_model_len=%d; "
                        "longer sequences stop early", self.max_seq_len, self.max_model_len)
        self.sampler = Sampler(sorted(self.scheduler.eos_token_ids), ops)
        self.runner.capture_cuda_graphs()
        steps = sched.num_scheduler_steps
        self.num_scheduler_steps = steps or (DEFAULT_GRAPH_STEPS if self.runner.graphs else 1)
        self.async_scheduling = sched.async_scheduling if sched.async_scheduling is not None \
            else self.device.type == "cuda"
        self.inflight: LaunchedStep | None = None   # launched, tokens not read (async scheduling)
        self._carry: dict = {}   # requests advanced by a drain outside step(), for the next step
        self.requests: dict[str, Request] = {}
        self.rng = random.Random(config.seed)
        self._next_seq_id = 0
        self.compiling: list = []   # (grammar future, sequence) not yet given to the scheduler
        self.spec = SpeculativeDecoder(config.speculative, self.max_seq_len,
                                       self.structured.valid_draft) if config.speculative else None
        log.info("%s %s, attention %s, kernels %s%s, KV cache %d tokens (%.0f MiB%s)",
                 self.device, str(self.dtype).replace("torch.", ""), attn.name,
                 "+".join(ops.providers()), " (auto)" if config.kernels == "auto" else "",
                 self.num_blocks * config.cache.block_size,
                 self.num_blocks * self.runner.bytes_per_block() / 2**20,
                 "" if self.kv_cache_dtype == self.dtype else ", fp8")

    @property
    def kernels_in_use(self) -> dict[str, str]:
        """``{"attention": backend name, op: provider}`` for every op resolved so far (ops
        resolve on first use, so after a step this names everything the model ran)."""
        return {"attention": self.runner.attn.name, **self.ops.chosen}

    def add_logits_observer(self, fn) -> Callable[[], None]:
        """Call ``fn(inputs, logits)`` after every forward pass, multi-step and verify steps
        included, before sampling; returns a function that removes it. ``logits`` is
        [len(inputs.logit_rows), vocab] on the device; ``inputs`` has ``input_ids``,
        ``positions`` (one per token of the pass) and ``logit_rows`` (the tokens whose logits
        these are); its tensors may be the CUDA graphs' static buffers, valid during the call
        only (copy what you keep). ``fn`` returns None, or a tensor of the same shape that replaces the logits
        (tests script or fake a model this way); an exception in ``fn`` fails the step as a
        model error would. With no observer the forward pass costs nothing extra.
        ``litevllm.testing.observe_logits`` records them."""
        runner = self.runner
        runner.logits_observers = (*runner.logits_observers, fn)

        def remove() -> None:
            runner.logits_observers = tuple(f for f in runner.logits_observers if f is not fn)
        return remove

    # set-up helpers --------------------------------------------------------------------------
    def _quant_config(self, manager, fmt):
        hf_quant = getattr(self.hf_config, "quantization_config", None)
        stored = (hf_quant or {}).get("quant_method")
        name = self.config.quantization or stored or "none"
        if stored and name == "none" and not fmt.dequantizes:  # schemes check their own
            raise ValueError(f"the checkpoint is quantized with '{stored}'; quantization="
                             f"'{name}' cannot load it (only formats that dequantize at load, "
                             f"such as GGUF, can change the scheme): leave quantization unset")
        entry = manager.select("quant_methods", name)
        if entry is None:
            raise PluginError(f"quantization '{name}' is not provided by any installed plugin "
                              f"(installed schemes: {', '.join(manager.names('quant_methods'))}); "
                              f"{quant_install_hint(name)}")
        return entry.load().from_hf(hf_quant or {})

    def _load_tokenizer(self, fmt):
        if self.config.tokenizer:
            with config_imports():
                from transformers import AutoTokenizer
                return AutoTokenizer.from_pretrained(self.config.tokenizer)
        return fmt.load_tokenizer()

    def _eos_ids(self) -> list[int]:
        """EOS ids from the config, the tokenizer and a local generation_config.json."""
        sources = [self.hf_config, self.tokenizer]
        if (self.path / "generation_config.json").is_file():  # never a hub lookup
            from transformers import GenerationConfig
            sources.append(GenerationConfig.from_pretrained(self.path))
        ids = set()
        for source in sources:
            eos = getattr(source, "eos_token_id", None)
            ids.update(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
        return sorted(ids)

    def _num_blocks(self) -> int:
        cache = self.config.cache
        per_block = self.runner.bytes_per_block()
        useful = self.config.scheduler.max_num_seqs * self.runner.max_blocks_per_seq + 1
        if cache.num_gpu_blocks_override:
            return cache.num_gpu_blocks_override
        if self.device.type == "cuda":
            peak = self.runner.profile_peak_memory(self.config.scheduler.max_num_batched_tokens)
            free, total = torch.cuda.mem_get_info(self.device)
            used_elsewhere = total - free - torch.cuda.memory_reserved(self.device)
            budget = total * cache.gpu_memory_utilization - peak - max(0, used_elsewhere)
            blocks = int(budget // per_block)
        elif cache.cpu_kv_cache_gib is not None:
            blocks = int(cache.cpu_kv_cache_gib * 2**30 // per_block)
        else:  # CPU: one full-length sequence or one full batch, at most 1/4 of the memory
            tokens = max(self.max_model_len, self.config.scheduler.max_num_batched_tokens)
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            blocks = min(-(-tokens // cache.block_size), int(ram // 4 // per_block))
        blocks = min(blocks, useful)
        if blocks < 1:
            raise RuntimeError("no memory left for the KV cache after loading the model; "
                               "raise gpu_memory_utilization or use a smaller max_model_len")
        return blocks

    # requests --------------------------------------------------------------------------------
    def encode(self, prompt) -> tuple[str | None, list[int]]:
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                ids = prompt["prompt_token_ids"]
                if not isinstance(ids, (list, tuple)) or not all(
                        isinstance(t, int) and not isinstance(t, bool) for t in ids):
                    raise ValueError("prompt_token_ids must be a list of integers")
                return prompt.get("prompt"), list(ids)
            prompt = prompt.get("prompt")
        if not isinstance(prompt, str):
            raise ValueError(f"a prompt must be a string or {{'prompt_token_ids': [...]}}, "
                             f"got {type(prompt).__name__}")
        if self.tokenizer is None:
            raise ValueError(f"{self.path} has no tokenizer; pass {{'prompt_token_ids': [...]}} "
                             f"or tokenizer=...")
        return prompt, self.tokenizer.encode(prompt)

    def add_request(self, request_id: str, prompt, params: SamplingParams | None = None) -> None:
        """Queue a request; raises ValueError (naming the cause) for bad input."""
        params = params or SamplingParams()
        if request_id in self.requests:
            raise ValueError(f"request id '{request_id}' is already in use")
        text, ids = self.encode(prompt)
        self._check_request(ids, params)
        grammar = self.structured.submit(params.structured_outputs) \
            if params.structured_outputs is not None else None
        request = Request(request_id, text, ids, params)
        request.seqs.append(self._new_seq(request, 0))
        self.requests[request_id] = request
        if grammar is not None and not grammar.done():
            self.compiling.append((grammar, request.seqs[0]))  # scheduled once compiled
        else:
            self.scheduler.add(request.seqs[0])

    def _check_request(self, ids: list[int], p: SamplingParams) -> None:
        """Every check of a new request; each raises ValueError naming the cause."""
        check_request(ids, p, self.hf_config.vocab_size, self.max_model_len)
        self.scheduler.check_admissible(len(ids), p.n)

    def _new_seq(self, request: Request, index: int, parent: Sequence | None = None) -> Sequence:
        p = request.params
        seed = ((p.seed * 1_000_003 + index) & (2**62 - 1)) if p.seed is not None \
            else self.rng.getrandbits(62)
        tokens = parent.token_ids if parent is not None else request.prompt_token_ids
        seq = Sequence(self._next_seq_id, request.request_id, tokens, p, index, seed)
        self._next_seq_id += 1
        self.output.add(seq)
        return seq

    def _make_child(self, parent: Sequence, index: int) -> Sequence:
        return self._new_seq(self.requests[parent.request_id], index, parent)

    def abort_request(self, request_id: str) -> RequestOutput:
        """Stop a request and free its blocks at once; returns its final output."""
        request = self.requests.get(request_id)
        if request is None:
            raise ValueError(f"unknown request id '{request_id}'")
        self._drain(self._carry)  # its tokens in flight are part of its output
        self._end_request(request, "abort")
        out = self.output.output(request, {})
        self._forget(request)
        return out

    def _end_request(self, request: Request, reason: str) -> None:
        # samples forked by a step whose outputs are not processed yet (async scheduling)
        known = {s.seq_id for s in request.seqs}
        orphans = [s for s in (*self.scheduler.running, *self.scheduler.waiting)
                   if s.request_id == request.request_id and s.seq_id not in known]
        if orphans:
            request.seqs.extend(orphans)
            request.forked = True
        for seq in request.seqs:
            if not seq.is_finished:
                self.scheduler.finish(seq, reason)
        if not request.forked:  # n > 1 before the fork: the other samples end empty
            request.forked = True
            for i in range(1, request.params.n):
                seq = self._new_seq(request, i)
                seq.status, seq.finish_reason = SeqStatus.FINISHED, reason
                request.seqs.append(seq)

    def _forget(self, request: Request) -> None:
        del self.requests[request.request_id]
        for seq in request.seqs:
            self.output.free(seq.seq_id)
            self.structured.free(seq.seq_id)
            if self.spec:
                self.spec.forget(seq.seq_id)
        self.runner.release([seq.seq_id for seq in request.seqs])

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    # the step: schedule -> execute -> update -> process ---------------------------------------
    def step(self, unfinished_outputs: bool = True) -> list[RequestOutput]:
        """Run one scheduled step. Returns outputs of the requests it advanced; with
        ``unfinished_outputs=False`` only those that finished (cheaper when not streaming).
        An error inside the step fails only the request that caused it (finish reason
        "error", ``RequestOutput.error`` says why); the others go on.

        With async scheduling a single-step batch is launched and left running: the call
        returns the outputs of the step launched before it (see ``_step_async``)."""
        touched, self._carry = self._carry, {}
        if self.compiling:
            self._admit_compiled(touched)
        if self.spec and self.inflight and self.spec.may_draft(len(self.scheduler.running)):
            self._drain(touched)  # drafts come from the tokens
        drafts = self.spec.propose(self.scheduler.running) if self.spec else None
        batch = self.scheduler.schedule(self.num_scheduler_steps - 1, drafts)
        if not batch:
            if self.inflight:
                self._drain(touched)
            elif self.scheduler.waiting and not self.scheduler.running:
                raise RuntimeError("scheduler deadlock: waiting requests fit in no free block")
            elif self.compiling and not touched:  # only grammars to wait for: do not spin
                wait([f for f, _ in self.compiling], timeout=0.05, return_when=FIRST_COMPLETED)
            return self._outputs(touched, unfinished_outputs)
        # a multi-step run advances its grammars between steps, so like a verify batch it
        # needs the tokens in flight first: both run synchronously
        constrained_run = batch.num_steps > 1 and any(
            s.params.structured_outputs is not None for s in batch.seqs)
        if self.async_scheduling and not batch.drafts and not constrained_run:
            return self._step_async(batch, touched, unfinished_outputs)
        if self.inflight:
            self._drain(touched)
            batch = batch.subset([s for s in batch.seqs if s.status is SeqStatus.RUNNING])
        if batch:
            self._step_sync(batch, touched)
        return self._outputs(touched, unfinished_outputs)

    def _step_sync(self, batch, touched) -> None:
        self.runner.copy_blocks(self.scheduler.take_copies())
        try:
            result = self._execute(batch)
        except Exception:  # noqa: BLE001 - find the request that broke the batch
            result = self._execute_alone(batch, touched)
        for seq, e in self.scheduler.update(batch, result.tokens):
            self._fail(self.requests[seq.request_id], e, touched)
        self._process_batch(batch, result, touched)
        if self.spec:
            self.spec.observe(batch, result.tokens)

    def _step_async(self, batch, touched, unfinished_outputs: bool) -> list[RequestOutput]:
        """Launch ``batch``'s forward (input ids of continuing sequences from the step in
        flight, on the device), read and process the step in flight while the device runs
        it, sample ``batch`` (after: penalties and grammars need the tokens just read) and
        leave it in flight, its sequences advanced by placeholder tokens. Sequences the step
        in flight finished keep their (discarded) rows in ``batch``. A multi-step batch (plain
        decodes only) samples on the device as it goes, so it is launched whole first."""
        prev, self.inflight = self.inflight, None
        fed = prev if prev is not None and prev.sample is not None else None  # sampled rows
        self.runner.copy_blocks(self.scheduler.take_copies())
        launched = logits = None
        try:
            if batch.num_steps > 1:
                launched = self._launch_steps(batch, fed)
            else:
                inputs = self.runner.prepare(batch)
                if fed is not None:
                    feed(inputs.input_ids, batch, fed)
                logits = self.runner.execute(inputs)
        except Exception as e:  # noqa: BLE001 - isolated below, synchronously
            launched = logits = None
            error = e
        if prev is not None:
            self._finish(prev, touched)
        if logits is not None:
            try:
                launched = self._sample(batch, inputs, logits)
            except Exception as e:  # noqa: BLE001
                error = e
        if launched is None:  # find the request that broke the batch, one step at a time
            log.warning("async step failed (%s: %s); running it synchronously",
                        type(error).__name__, error)
            batch = batch.subset([s for s in batch.seqs if s.status is SeqStatus.RUNNING])
            if batch:
                self._step_sync(batch, touched)
            return self._outputs(touched, unfinished_outputs)
        # outputs first: a request whose sequences all reach their length limit in ``advance``
        # is finished there, but its last tokens are read with the next step
        outputs = self._outputs(touched, unfinished_outputs)
        for seq, e in self.scheduler.advance(batch, launched.seqs, batch.num_steps):
            self._fail(self.requests[seq.request_id], e, self._carry)
        self.inflight = launched
        return outputs

    def _launch_steps(self, batch, prev: LaunchedStep | None) -> LaunchedStep:
        """Launch a multi-step batch; its tokens [k, B] stay on the device."""
        seqs = batch.seqs
        first = (lambda ids: feed(ids, batch, prev)) if prev is not None else None
        tokens = self.runner.decode_steps(seqs, batch.num_steps, self.sampler.picker(seqs), first)
        return LaunchedStep(batch, list(seqs), LaunchedSample(tokens[-1], None,
                                                              HostCopy(tokens.T.contiguous())))

    def _finish(self, step: LaunchedStep, touched) -> None:
        """The host half of a step launched by ``_step_async``: read its tokens, apply stops,
        process the outputs."""
        tokens = self.scheduler.resolve(step.seqs, step.read().token_ids)
        self._process_batch(step.batch, step.result(tokens), touched)

    def _drain(self, touched) -> None:
        """Finish the step in flight, if any (the next one is not launched yet)."""
        step, self.inflight = self.inflight, None
        if step is not None:
            self._finish(step, touched)

    def _process_batch(self, batch, result: StepResult, touched) -> None:
        """Take each sequence's new tokens into the output layer (stop strings, grammars) and
        record them in ``touched`` (request id -> sample index -> new tokens). A request whose
        processing fails is failed; its later sequences (forked children) are skipped."""
        requests, forks, process = self.requests, batch.forks, self.output.process
        logprobs, sampled = result.logprobs, result.tokens
        seqs = batch.seqs if not forks else \
            [s for seq in batch.seqs for s in (seq, *forks.get(seq.seq_id, ()))]
        for s in seqs:
            request = requests.get(s.request_id)
            if request is None or request.error is not None:
                continue
            try:
                children = forks.get(s.seq_id) if forks else None
                if children:
                    request.seqs.extend(children)
                    request.forked = True
                new = process(s, logprobs.get(s.seq_id) if logprobs else None)  # a new list
                if new and s.params.structured_outputs is not None \
                        and self.structured.accept(s, new) and not s.is_finished:
                    self.scheduler.finish(s, "stop")  # the grammar is complete (EOS ignored)
                if new or s.seq_id in sampled:
                    deltas = touched.get(s.request_id)
                    if deltas is None:
                        touched[s.request_id] = {s.index: new}
                    elif s.index in deltas:
                        deltas[s.index].extend(new)
                    else:
                        deltas[s.index] = new
            except Exception as e:  # noqa: BLE001
                self._fail(request, e, touched)

    def _admit_compiled(self, touched) -> None:
        """Schedule the requests whose grammar finished compiling; fail those it rejected."""
        still = []
        for future, seq in self.compiling:
            request = self.requests.get(seq.request_id)
            if request is None or seq.is_finished:
                continue  # aborted meanwhile
            if not future.done():
                still.append((future, seq))
            elif future.exception() is not None:
                self._fail(request, future.exception(), touched)
            else:
                self.scheduler.add(seq)
        self.compiling = still

    def _execute(self, batch) -> StepResult:
        """Run the model on ``batch`` and sample: no scheduler or request state changes."""
        if batch.num_steps > 1:
            seqs = batch.seqs
            pick, done = self.structured.step_picker(seqs, self.sampler.picker(seqs))
            try:
                tokens = self.runner.decode_steps(seqs, batch.num_steps, pick)
            finally:
                done()
            tokens = tokens.T.tolist()
            return StepResult({s.seq_id: t for s, t in zip(seqs, tokens)}, {})
        inputs = self.runner.prepare(batch)
        return self._sample(batch, inputs, self.runner.execute(inputs)).result()

    def _sample(self, batch, inputs, logits) -> LaunchedStep:
        """Sample the batch's rows (and verify its drafts) from ``logits``; sampled tokens stay
        on the device."""
        rows, sample_seqs, verify = [], [], []
        drafts, forks = batch.drafts, batch.forks
        for seq, n, idx, pidx in zip(batch.seqs, batch.num_new_tokens, inputs.sample_index,
                                     inputs.prompt_index):
            # request.prompt_logprobs is a list exactly when its params ask for them
            if seq.params.prompt_logprobs is not None \
                    and seq.num_computed_tokens < seq.num_prompt_tokens:
                self.output.record_prompt_logprobs(self.requests[seq.request_id], seq,
                                                   seq.num_computed_tokens, n, logits[pidx:])
            if idx < 0:
                continue
            if drafts and seq.seq_id in drafts:
                verify.append((seq, idx))
                continue
            rows.append(idx)
            sample_seqs.append(seq)
            if forks:
                for child in forks.get(seq.seq_id, ()):
                    rows.append(idx)
                    sample_seqs.append(child)
        result = LaunchedStep(batch, sample_seqs, None)
        if sample_seqs:
            picked = logits[:len(rows)] if rows == list(range(len(rows))) else \
                logits.index_select(0, to_device(int_tensor(rows), logits.device))
            result.sample = self.sampler.launch(self.structured.mask(picked, sample_seqs), sample_seqs)
        if verify:
            seqs = [s for s, _ in verify]
            drafts = [batch.drafts[s.seq_id] for s in seqs]
            index = [i + j for (_, i), d in zip(verify, drafts) for j in range(len(d) + 1)]
            rows = self.structured.mask_drafts(logits[index], seqs, drafts)
            accepted = self.sampler.verify(rows, seqs, drafts)
            result.verified = {s.seq_id: t for s, t in zip(seqs, accepted)}
        return result

    def _execute_alone(self, batch, touched) -> StepResult:
        """The batch failed: run each request's part alone and fail those that still fail."""
        result = StepResult({}, {})
        by_request: dict[str, list[Sequence]] = {}
        for seq in batch.seqs:
            by_request.setdefault(seq.request_id, []).append(seq)
        for rid, seqs in by_request.items():
            try:
                part = self._execute(batch.subset(seqs))
            except Exception as e:  # noqa: BLE001
                self._fail(self.requests[rid], e, touched)
                continue
            result.tokens.update(part.tokens)
            result.logprobs.update(part.logprobs)
        return result

    def _fail(self, request: Request, error: Exception, touched) -> None:
        log.error("request %s failed: %s: %s", request.request_id, type(error).__name__, error,
                  exc_info=error)
        request.error = f"{type(error).__name__}: {error}"
        self._end_request(request, "error")
        touched.setdefault(request.request_id, {})

    def _outputs(self, touched: dict, unfinished_outputs: bool) -> list[RequestOutput]:
        """Outputs of the requests a step advanced; finished requests are forgotten."""
        outputs = []
        for request in map(self.requests.get, touched):
            if request is None:  # aborted since (touched by a drain before the abort)
                continue
            finished = request.finished
            if unfinished_outputs or finished:
                outputs.append(self.output.output(request, touched[request.request_id]))
            if finished:
                self._forget(request)
        return outputs

    # stats -----------------------------------------------------------------------------------
    @property
    def block_manager(self):
        """The scheduler's block manager (read-only use: tests and metrics)."""
        return self.scheduler.bm

    def stats(self) -> dict:
        """The scheduler's gauges and counters; with speculative decoding also spec_num_drafts
        (verify steps x sequences), spec_num_draft_tokens, spec_num_accepted_tokens,
        spec_num_accepted_tokens_per_pos (entry i: drafts whose token i was accepted),
        spec_acceptance_rate and spec_mean_acceptance_length (tokens per verify step)."""
        stats = self.scheduler.stats()
        if self.spec:
            stats.update(self.spec.stats())
        return stats

