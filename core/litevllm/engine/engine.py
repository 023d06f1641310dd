"""The engine: requests in, one scheduled model step at a time, outputs out."""
from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path

import torch

from litevllm.config import DEFAULT_GRAPH_STEPS, EngineConfig, resolve_dtype
from litevllm.engine.block_manager import BlockManager
from litevllm.engine.detokenizer import Detokenizer, DetokState, find_stop, stream_delta
from litevllm.engine.model_runner import ModelRunner
from litevllm.engine.sampler import Sampler, prompt_logprobs
from litevllm.engine.scheduler import ScheduledBatch, Scheduler
from litevllm.engine.sequence import Sequence, SeqStatus
from litevllm.formats.hf_config import config_imports
from litevllm.model.context import ModelContext
from litevllm.model.loader import init_dummy_weights, load_weights
from litevllm.ops import Ops, pick_attention_backend
from litevllm.outputs import CompletionOutput, RequestOutput
from litevllm.plugins import PluginError, get_plugin_manager, quant_install_hint
from litevllm.sampling_params import SamplingParams

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


class Request:
    def __init__(self, request_id, prompt, prompt_token_ids, params: SamplingParams):
        self.request_id, self.prompt, self.params = request_id, prompt, params
        self.prompt_token_ids = prompt_token_ids
        self.seqs: list[Sequence] = []
        self.forked = params.n == 1
        self.prompt_logprobs: list | None = [None] if params.prompt_logprobs is not None else None
        self.error: str | None = None  # why the engine failed this request alone

    @property
    def finished(self) -> bool:
        return self.forked and all(s.is_finished for s in self.seqs)


class LLMEngine:
    def __init__(self, config: EngineConfig):
        self.config = config
        manager = get_plugin_manager()
        self.path = resolve_model_path(config.model)
        fmt = manager.checkpoint_format(self.path)(self.path)
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
        attn = pick_attention_backend(manager, config.kernels, self.device.type)(
            self.device, self.dtype, config.cache.block_size)
        quant = self._quant_config(manager)
        fmt.set_quantization(quant)
        ctx = ModelContext(ops, attn, quant, self.dtype, self.device, self.max_model_len)
        torch.manual_seed(config.seed)
        with torch.device(self.device):
            self.model = model_cls(self.hf_config, ctx).eval()
        if config.load_format == "dummy":
            init_dummy_weights(self.model, config.seed)
        else:
            load_weights(self.model, fmt.iter_tensors(self.dtype))
        self.tokenizer = self._load_tokenizer(fmt)
        self.detokenizer = Detokenizer(self.tokenizer) if self.tokenizer is not None else None
        sched = config.scheduler
        self.runner = ModelRunner(self.model, attn, self.device, config.cache.block_size,
                                  self.max_model_len, sched.max_num_seqs, not config.enforce_eager)
        self.num_blocks = self._num_blocks()
        self.runner.allocate_kv_cache(self.num_blocks)
        self.block_manager = BlockManager(self.num_blocks, config.cache.block_size,
                                          config.cache.enable_prefix_caching)
        self.scheduler = Scheduler(sched, self.block_manager, self.max_model_len)
        # the longest sequence the KV cache can hold alone; longer ones finish with "length"
        self.max_seq_len = self.scheduler.max_seq_len
        if self.max_seq_len < self.max_model_len:
            log.warning("the KV cache holds only %d tokens, fewer than max_model_len=%d; "
                        "longer sequences stop early", self.max_seq_len, self.max_model_len)
        self.sampler = Sampler(self._eos_ids())
        self.runner.capture_cuda_graphs()
        steps = sched.num_scheduler_steps
        self.num_scheduler_steps = steps or (DEFAULT_GRAPH_STEPS if self.runner.graphs else 1)
        self.requests: dict[str, Request] = {}
        self.rng = random.Random(config.seed)
        self._single_step_once = False  # a multi-step run failed: find the culprit one step at a time
        self._next_seq_id = 0
        log.info("%s %s, attention %s, kernels %s%s, KV cache %d tokens (%.0f MiB)",
                 self.device, str(self.dtype).replace("torch.", ""), attn.name,
                 "+".join(ops.providers()), " (auto)" if config.kernels == "auto" else "",
                 self.num_blocks * config.cache.block_size,
                 self.num_blocks * self.runner.bytes_per_block() / 2**20)

    @property
    def kernels_in_use(self) -> dict[str, str]:
        """``{"attention": backend name, op: provider}`` for every op resolved so far (ops
        resolve on first use, so after a step this names everything the model ran)."""
        return {"attention": self.runner.attn.name, **self.ops.chosen}

    # set-up helpers --------------------------------------------------------------------------
    def _quant_config(self, manager):
        hf_quant = getattr(self.hf_config, "quantization_config", None)
        name = self.config.quantization or (hf_quant or {}).get("quant_method") or "none"
        entry = manager.pick("quant_methods", name)
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
        if not isinstance(params, SamplingParams):
            raise ValueError(f"sampling params must be a SamplingParams, got {type(params).__name__}")
        if request_id in self.requests:
            raise ValueError(f"request id '{request_id}' is already in use")
        text, ids = self.encode(prompt)
        if not ids:
            raise ValueError("prompt is empty")
        self._check_request(ids, params)
        request = Request(request_id, text, ids, params)
        request.seqs.append(self._new_seq(request, 0))
        self.requests[request_id] = request
        self.scheduler.add(request.seqs[0])

    def _check_request(self, ids: list[int], p: SamplingParams) -> None:
        """Checks that need the model or the cache; each raises ValueError naming the cause."""
        vocab = self.hf_config.vocab_size
        if min(ids) < 0 or max(ids) >= vocab:
            raise ValueError(f"prompt token ids must be in [0, {vocab})")
        if any(not 0 <= t < vocab for t in p.stop_token_ids):
            raise ValueError(f"SamplingParams.stop_token_ids must be in [0, {vocab}), "
                             f"got {p.stop_token_ids!r}")
        for name in ("logprobs", "prompt_logprobs", "top_k"):
            if (getattr(p, name) or 0) > vocab:
                raise ValueError(f"SamplingParams.{name} must be at most the vocabulary size "
                                 f"{vocab}, got {getattr(p, name)}")
        for name in ("max_tokens", "min_tokens"):
            if (getattr(p, name) or 0) > self.max_model_len:
                raise ValueError(f"SamplingParams.{name} must be at most max_model_len "
                                 f"{self.max_model_len}, got {getattr(p, name)}")
        self.scheduler.check_admissible(len(ids), p.n)

    def _new_seq(self, request: Request, index: int) -> Sequence:
        p = request.params
        seed = ((p.seed * 1_000_003 + index) & (2**62 - 1)) if p.seed is not None \
            else self.rng.getrandbits(62)
        seq = Sequence(self._next_seq_id, request.request_id, request.prompt_token_ids, p, index, seed)
        self._next_seq_id += 1
        seq.detok = DetokState(len(request.prompt_token_ids))
        return seq

    def abort_request(self, request_id: str) -> RequestOutput:
        """Stop a request and free its blocks at once; returns its final output."""
        request = self.requests.pop(request_id, None)
        if request is None:
            raise ValueError(f"unknown request id '{request_id}'")
        self._finish_request(request, "abort")
        return self._output(request, {})

    def _finish_request(self, request: Request, reason: str) -> None:
        for seq in request.seqs:
            if not seq.is_finished:
                self.scheduler.finish(seq, reason)
        if not request.forked:  # n > 1 before the fork: the other samples end empty
            request.forked = True
            for i in range(1, request.params.n):
                seq = self._new_seq(request, i)
                seq.status, seq.finish_reason = SeqStatus.FINISHED, reason
                request.seqs.append(seq)

    def _fail(self, seq: Sequence, error: BaseException, touched: dict) -> None:
        """Finish ``seq``'s whole request with finish_reason "error"; the rest of the batch
        goes on. Its output carries the error message."""
        request = self.requests[seq.request_id]
        if request.error is None:
            log.warning("request %s failed in the engine: %r", request.request_id, error)
            request.error = f"the engine failed on this request: {type(error).__name__}: {error}"
        self._finish_request(request, "error")
        touched.setdefault(request.request_id, {})

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    # the step --------------------------------------------------------------------------------
    def step(self, unfinished_outputs: bool = True) -> list[RequestOutput]:
        """Run one scheduled step. Returns outputs of the requests it advanced; with
        ``unfinished_outputs=False`` only those that finished (cheaper when not streaming)."""
        batch = self.scheduler.schedule()
        if not batch:
            if self.scheduler.waiting and not self.scheduler.running:
                raise RuntimeError("scheduler deadlock: waiting requests fit in no free block")
            return []
        self.runner.copy_blocks(self.block_manager.take_copies())
        k = self._multi_step_count(batch)
        if k > 1:
            return self._decode_steps(batch, k, unfinished_outputs)
        touched: dict[str, dict[int, list[int]]] = {}
        forward = self._forward(batch, touched)
        if forward is None:  # every sequence of the batch failed
            return self._outputs(touched, unfinished_outputs)
        batch, inputs, logits = forward
        rows, sample_seqs = [], []
        for seq, n, idx, pidx in zip(batch.seqs, batch.num_new_tokens, inputs.sample_index,
                                     inputs.prompt_index):
            start = seq.num_computed_tokens
            seq.num_computed_tokens += n
            self.block_manager.commit(seq)
            request = self.requests[seq.request_id]
            if request.prompt_logprobs is not None and start < seq.num_prompt_tokens:
                try:
                    self._prompt_logprobs(request, seq, start, n, logits[pidx:])
                except Exception as e:
                    self._fail(seq, e, touched)
            if idx < 0 or seq.is_finished:
                continue
            rows.append(idx)
            sample_seqs.append(seq)
            if not request.forked:
                request.forked = True
                for i in range(1, request.params.n):
                    child = self._new_seq(request, i)
                    self.scheduler.fork(seq, child)
                    request.seqs.append(child)
                    rows.append(idx)
                    sample_seqs.append(child)
        if sample_seqs:
            if rows != list(range(len(rows))):
                logits = logits[rows]
            for seq, token, lp in self._sample(logits[:len(rows)], sample_seqs, touched):
                if seq.is_finished:  # its request failed in this step
                    continue
                try:
                    self._append(seq, token, lp, touched)
                except Exception as e:
                    self._fail(seq, e, touched)
        return self._outputs(touched, unfinished_outputs)

    # isolation: a request that makes a step throw fails alone --------------------------------
    def _forward(self, batch: ScheduledBatch, touched: dict):
        """(batch, inputs, logits), or None. If the batch's forward throws, each sequence runs
        alone (nothing is committed before sampling) and those that still throw fail."""
        try:
            inputs = self.runner.prepare(batch)
            return batch, inputs, self.runner.execute(inputs)
        except Exception as error:
            bad = []
            for seq, n in zip(batch.seqs, batch.num_new_tokens):
                try:
                    self.runner.execute(self.runner.prepare(ScheduledBatch([seq], [n])))
                except Exception as e:
                    bad.append((seq, e))
            for seq, e in bad or [(s, error) for s in batch.seqs]:  # none alone: all of them
                self._fail(seq, e, touched)
            keep = [(s, n) for s, n in zip(batch.seqs, batch.num_new_tokens) if not s.is_finished]
            batch = ScheduledBatch([s for s, _ in keep], [n for _, n in keep])
            if not batch:
                return None
            inputs = self.runner.prepare(batch)
            return batch, inputs, self.runner.execute(inputs)

    def _sample(self, logits, seqs: list[Sequence], touched: dict):
        """(seq, token, logprobs) per row; if the batch's sampling throws, rows are sampled
        one by one and those that throw fail their request."""
        try:
            result = self.sampler(logits, seqs)
            return list(zip(seqs, result.token_ids, result.logprobs))
        except Exception:
            out = []
            for i, seq in enumerate(seqs):
                if seq.is_finished:
                    continue
                try:
                    result = self.sampler(logits[i:i + 1], [seq])
                    out.append((seq, result.token_ids[0], result.logprobs[0]))
                except Exception as e:
                    self._fail(seq, e, touched)
            return out

    def _outputs(self, touched: dict, unfinished_outputs: bool) -> list[RequestOutput]:
        """Outputs of the requests a step advanced; finished requests are forgotten."""
        outputs = [self._output(self.requests[rid], deltas) for rid, deltas in touched.items()
                   if unfinished_outputs or self.requests[rid].finished]
        for out in outputs:
            if out.finished:
                del self.requests[out.request_id]
        return outputs

    def _multi_step_count(self, batch) -> int:
        """How many decode steps to run before the next host sync: num_scheduler_steps for a
        batch of plain decodes (no new arrivals waiting, no penalties, logprobs or pending
        min_tokens), fewer near the length limit or when blocks run short; else 1."""
        k = self.num_scheduler_steps
        if k == 1 or self.scheduler.waiting or batch.preempted or self._single_step_once:
            self._single_step_once = False
            return 1
        longest_left = 1
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            p = seq.params
            if n != 1 or not seq.is_decode or p.logprobs is not None \
                    or p.repetition_penalty != 1 or p.presence_penalty or p.frequency_penalty \
                    or seq.num_output_tokens < p.min_tokens or not self.requests[seq.request_id].forked:
                return 1
            # a sequence may finish (max_tokens, EOS, stop) part-way: its later tokens are
            # dropped; the cache's hard length limit caps the lookahead, and so does the
            # batch's longest remaining max_tokens
            k = max(1, min(k, self.max_seq_len - seq.num_tokens))
            left = k if p.max_tokens is None else p.max_tokens - seq.num_output_tokens
            longest_left = max(longest_left, left)
        k = min(k, longest_left)
        bm = self.block_manager

        def blocks_short(k: int) -> bool:
            need = sum(max(0, bm.blocks_needed(s.num_computed_tokens + k) - len(s.block_table))
                       for s in batch.seqs)
            return need > bm.num_free_blocks
        while k > 1 and blocks_short(k):  # shrink until the lookahead fits
            k -= 1
        return k

    def _decode_steps(self, batch, k: int, unfinished_outputs: bool) -> list[RequestOutput]:
        """Run ``k`` decode steps on the device, then append each sequence's tokens in order,
        dropping those after it finishes (their cache slots are freed with it)."""
        seqs = batch.seqs
        for seq in seqs:
            self.block_manager.allocate(seq, k)
        try:
            tokens = self.runner.decode_steps(seqs, k, self.sampler.picker(seqs)).tolist()
        except Exception:  # nothing committed: redo as single steps, which isolate the culprit
            log.warning("a %d-step decode run failed; retrying one step at a time", k)
            self._single_step_once = True
            return []
        touched: dict[str, dict[int, list[int]]] = {}
        for i, seq in enumerate(seqs):
            for j in range(k):
                seq.num_computed_tokens += 1
                self.block_manager.commit(seq)
                self._append(seq, tokens[j][i], None, touched)
                if seq.is_finished:
                    break
        return self._outputs(touched, unfinished_outputs)

    def _prompt_logprobs(self, request, seq, start, n, logits):
        """Logprobs of the prompt tokens this chunk predicts (first sample only). Row ``i`` of
        ``logits`` is position ``start + i``, which predicts token ``start + i + 1``."""
        first = len(request.prompt_logprobs) - 1   # first position not yet recorded
        stop = min(start + n, seq.num_prompt_tokens - 1)
        if seq.index != 0 or not start <= first < stop:
            return  # recorded before (recomputation after preemption), or nothing to record
        next_tokens = seq.token_ids[first + 1:stop + 1]
        rows = logits[first - start:first - start + len(next_tokens)]
        request.prompt_logprobs += prompt_logprobs(rows, next_tokens, request.params.prompt_logprobs)

    def _append(self, seq: Sequence, token: int, logprob, touched) -> None:
        p = seq.params
        seq.append_token(token)
        if seq.metrics.first_token_time is None:
            seq.metrics.first_token_time = time.monotonic()
        if logprob is not None:
            seq.logprobs.append(logprob)
        reason, stop_reason = None, None
        is_stop_token = token in p.stop_token_ids or (not p.ignore_eos and token in self.sampler.eos_token_ids)
        if is_stop_token and seq.num_output_tokens > p.min_tokens:
            reason, stop_reason = "stop", token if token in p.stop_token_ids else None
        elif self.detokenizer is not None:
            new = self.detokenizer.step(seq.detok, seq.token_ids, p.skip_special_tokens)
            if new and p.stop and seq.num_output_tokens >= p.min_tokens:
                hit = find_stop(seq.detok.text, len(new), p.stop)
                if hit is not None:
                    i, stop = hit
                    seq.detok.text = seq.detok.text[:i + (len(stop) if p.include_stop_str_in_output else 0)]
                    reason, stop_reason = "stop", stop
        if reason is None and ((p.max_tokens is not None and seq.num_output_tokens >= p.max_tokens)
                               or seq.num_tokens >= self.max_seq_len):
            reason = "length"
        if reason is not None:
            if self.detokenizer is not None and not isinstance(stop_reason, str):
                # text still held back (an incomplete character) is final now; a stop token's
                # own text is left out
                ids = seq.token_ids[:-1] if reason == "stop" else seq.token_ids
                self.detokenizer.step(seq.detok, ids, p.skip_special_tokens, final=True)
            seq.stop_reason = stop_reason
            self.scheduler.finish(seq, reason)
        touched.setdefault(seq.request_id, {}).setdefault(seq.index, []).append(token)

    def _output(self, request: Request, deltas: dict[int, list[int]]) -> RequestOutput:
        outs = []
        for seq in request.seqs:
            state = seq.detok
            text = state.text if state else ""
            delta_text = stream_delta(state, seq.params.stop, seq.is_finished) if state else ""
            outs.append(CompletionOutput(seq.index, text, seq.output_token_ids, seq.finish_reason,
                                         seq.stop_reason, list(seq.logprobs) if seq.params.logprobs is not None else None,
                                         delta_text, deltas.get(seq.index, [])))
        head = request.seqs[0]
        return RequestOutput(request.request_id, request.prompt, request.prompt_token_ids, outs,
                             request.finished, head.metrics, request.prompt_logprobs,
                             head.metrics.num_cached_tokens, request.error)

    # stats -----------------------------------------------------------------------------------
    def stats(self) -> dict:
        bm = self.block_manager
        return {"num_running": len(self.scheduler.running), "num_waiting": len(self.scheduler.waiting),
                "num_blocks": self.num_blocks, "num_free_blocks": bm.num_free_blocks,
                "prefix_cache_hit_rate": bm.hit_rate(), "prefix_cache_hits": bm.hits,
                "prefix_cache_queries": bm.queries}
