"""The public engine API for front ends (the OpenAI server, Ray Serve replicas): an asyncio
bridge to one engine loop running on its own thread.

Only the engine thread touches the engine; coroutines send it messages through an inbox and
receive each request's outputs on an asyncio queue of their own. Text is tokenized in a thread
pool, never on the engine thread, and reaches the engine as token ids.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator

from litevllm.outputs import RequestOutput
from litevllm.sampling_params import SamplingParams

log = logging.getLogger("litevllm")


class EngineDeadError(RuntimeError):
    """The engine loop stopped (crash or shutdown); no request can run."""


class EngineOverloadedError(RuntimeError):
    """The waiting queue is full; retry later."""


class _Stream:
    """One request's channel from the engine thread to its coroutine."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stream: bool):
        self.loop, self.stream = loop, stream
        self.queue: asyncio.Queue = asyncio.Queue()
        self.generated = 0  # output tokens counted so far (for the token counters)



def _deliver(items: list) -> None:
    for channel, item in items:
        channel.queue.put_nowait(item)


class AsyncLLMEngine:
    """``AsyncLLMEngine(llm)`` runs ``llm``'s engine on a thread of its own.

    - ``async for out in engine.generate(prompt, params, request_id): ...`` yields
      ``RequestOutput`` s (each step's progress when ``stream=True``, else only the final one);
      a request the engine failed alone ends with ``finish_reason == "error"`` and ``out.error``.
      Bad input raises ``ValueError`` at the first iteration; a full queue
      ``EngineOverloadedError``; a stopped engine ``EngineDeadError``. Leaving the loop early
      (break, cancellation, client disconnect) aborts the request.
    - ``check_request(prompt_token_ids, params)``: the same errors, before starting a stream.
    - ``abort(request_id)``, ``stats()``, ``healthy()``, ``shutdown(timeout)``;
      ``max_model_len``, ``vocab_size``, ``max_num_seqs``.
    - ``encode`` / ``decode`` / ``apply_chat_template``: the model's tokenizer, thread-safe,
      for callers that tokenize off the event loop (``await engine.run_in_pool(...)``).
    """

    def __init__(self, llm, *, max_waiting: int | None = None, stall_timeout: float = 120.0,
                 tokenizer_threads: int = 2):
        self._llm, self._engine = llm, llm.engine
        self.max_model_len: int = self._engine.max_model_len
        self.vocab_size: int = self._engine.hf_config.vocab_size
        self.max_num_seqs: int = self._engine.config.scheduler.max_num_seqs
        self.max_waiting = max_waiting
        self.stall_timeout = stall_timeout
        self._pool = ThreadPoolExecutor(tokenizer_threads, thread_name_prefix="litevllm-tokenize")
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, _Stream] = {}      # engine thread only
        self._lock = threading.Lock()
        self._unfinished = 0                         # accepted, not yet finished (under _lock)
        self._ids = itertools.count()
        self._closing = False
        self._step_started: float | None = None      # set while a step runs (stall detection)
        self._counters = {"prompt_tokens": 0, "generation_tokens": 0}
        self._outbox: dict[asyncio.AbstractEventLoop, list] = {}  # engine thread: to deliver
        self._stats = self._snapshot()
        self._thread = threading.Thread(target=self._run, name="litevllm-engine", daemon=True)
        self._thread.start()

    # tokenizer helpers ---------------------------------------------------------------------
    @property
    def tokenizer(self):
        """The model's Hugging Face tokenizer (None if the checkpoint has none)."""
        return self._engine.tokenizer

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (as the engine would tokenize a prompt)."""
        return self._engine.encode(text)[1]

    def decode(self, token_ids: list[int], skip_special_tokens: bool = False) -> str:
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer")
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], chat_template: str | None = None) -> list[int]:
        """Prompt token ids for a conversation (with the generation prompt)."""
        return self._llm.apply_chat_template(messages, chat_template)

    async def run_in_pool(self, fn, *args):
        """Run ``fn(*args)`` (tokenization, detokenization) in the engine's tokenizer pool."""
        try:
            future = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except RuntimeError:  # the pool was shut down with the engine
            raise EngineDeadError("the engine is not running") from None
        return await future

    # requests ------------------------------------------------------------------------------
    async def generate(self, prompt, params: SamplingParams | None = None,
                       request_id: str | None = None, *, stream: bool = True
                       ) -> AsyncIterator[RequestOutput]:
        """Run one request: ``prompt`` is a string (tokenized in the pool), a list of token ids
        or ``{"prompt_token_ids": [...], "prompt": text}``."""
        self._check_accepting()
        request_id = request_id or f"req-{next(self._ids)}"
        if isinstance(prompt, str):
            prompt = {"prompt": prompt, "prompt_token_ids": await self.run_in_pool(self.encode, prompt)}
        elif isinstance(prompt, (list, tuple)):
            prompt = {"prompt_token_ids": list(prompt)}
        self._check_accepting()
        channel = _Stream(asyncio.get_running_loop(), stream)
        with self._lock:
            self._unfinished += 1
        self._inbox.put(("add", request_id, prompt, params or SamplingParams(), channel))
        finished = False
        try:
            while True:
                item = await channel.queue.get()
                if isinstance(item, BaseException):
                    finished = True  # never added, or already dropped by the engine thread
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self.abort(request_id)

    def check_request(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Raise what ``generate`` would for this request before any output (``ValueError``
        naming the cause, ``EngineOverloadedError``, ``EngineDeadError``), so a front end can
        answer with an error status before it starts a stream. Reads only static settings:
        safe from any thread."""
        self._check_accepting()
        self._engine._check_request(list(prompt_token_ids), params)

    def _check_accepting(self) -> None:
        if self._closing or not self._thread.is_alive():
            raise EngineDeadError("the engine is not running" if not self._closing
                                  else "the server is shutting down")
        if self.max_waiting is not None:
            with self._lock:
                waiting = self._unfinished - self._stats["num_running"]
            if waiting >= self.max_waiting:
                raise EngineOverloadedError(f"too many waiting requests ({waiting}); retry later")

    def abort(self, request_id: str) -> None:
        """Stop a request and free its KV-cache blocks (a no-op once it finished)."""
        self._inbox.put(("abort", request_id))

    # state ---------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Counters and gauges of the engine loop: num_running, num_waiting, num_unfinished,
        num_blocks, num_free_blocks, kv_cache_usage (0..1), prefix_cache_queries / _hits
        (tokens), prompt_tokens and generation_tokens (totals); with speculative decoding also
        the engine's ``spec_*`` counters (``LLMEngine.stats``)."""
        with self._lock:
            return {**self._stats, "num_unfinished": self._unfinished}

    def healthy(self) -> bool:
        """The loop thread runs, no step has taken longer than ``stall_timeout`` and the
        engine is not shutting down."""
        started = self._step_started
        stalled = started is not None and time.monotonic() - started > self.stall_timeout
        return self._thread.is_alive() and not stalled and not self._closing

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting requests, let those in flight finish for up to ``timeout`` seconds,
        then end the rest with ``EngineDeadError`` and stop the loop. Blocking; thread-safe."""
        self._closing = True
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            with self._lock:
                if self._unfinished == 0:
                    break
            time.sleep(0.05)
        self._inbox.put(None)
        self._thread.join(max(5.0, timeout))
        # the tokenizer pool stays: streams may still format their last outputs

    # engine thread -------------------------------------------------------------------------
    def _run(self) -> None:
        engine = self._engine
        try:
            while True:
                msgs = [] if engine.has_unfinished_requests() else [self._inbox.get()]
                while True:
                    try:
                        msgs.append(self._inbox.get_nowait())
                    except queue.Empty:
                        break
                for msg in msgs:
                    if msg is None:
                        return self._fail_all(EngineDeadError("the server is shutting down"))
                    if msg[0] == "add":
                        self._add(*msg[1:])
                    else:
                        self._abort(msg[1])
                if engine.has_unfinished_requests():
                    self._step()
                with self._lock:
                    self._stats = self._snapshot()
                self._flush()
        except BaseException as e:  # a bug in the loop itself: fail everyone, stay dead
            log.exception("the engine loop crashed")
            self._fail_all(EngineDeadError(f"the engine loop crashed: {type(e).__name__}"))
        finally:
            self._flush()

    def _add(self, request_id: str, prompt, params: SamplingParams, channel: _Stream) -> None:
        try:
            self._engine.add_request(request_id, prompt, params)
        except Exception as e:  # ValueError for bad input; anything else fails this one alone
            self._done(channel, e if isinstance(e, ValueError) else
                       RuntimeError(f"the engine failed on this request: {type(e).__name__}"))
            return
        self._streams[request_id] = channel
        self._counters["prompt_tokens"] += len(prompt["prompt_token_ids"]) \
            if isinstance(prompt, dict) and "prompt_token_ids" in prompt else 0

    def _abort(self, request_id: str) -> None:
        channel = self._streams.pop(request_id, None)
        if channel is None:
            return  # finished or never added
        try:
            out = self._engine.abort_request(request_id)
        except ValueError:
            out = None
        self._done(channel, out)

    def _step(self) -> None:
        self._step_started = time.monotonic()
        try:
            outputs = self._engine.step(
                unfinished_outputs=any(c.stream for c in self._streams.values()))
        except Exception as e:  # the engine isolates requests; this is a last resort
            log.exception("engine step failed")
            for rid in list(self._streams):
                try:
                    self._engine.abort_request(rid)
                except ValueError:
                    pass
            self._fail_all(RuntimeError(f"engine step failed: {type(e).__name__}"))
            return
        finally:
            self._step_started = None
        for out in outputs:
            channel = self._streams.get(out.request_id)
            if channel is not None:
                total = sum(len(o.token_ids) for o in out.outputs)
                self._counters["generation_tokens"] += total - channel.generated
                channel.generated = total
        with self._lock:  # stats are current before anyone sees these outputs
            self._stats = self._snapshot()
        for out in outputs:
            channel = self._streams.get(out.request_id)
            if channel is None:
                continue
            if out.finished:
                del self._streams[out.request_id]
                self._done(channel, out)
            elif channel.stream:
                self._put(channel, out)

    def _done(self, channel: _Stream, item) -> None:
        """The last item a request's channel receives: its final output or an exception."""
        with self._lock:
            self._unfinished -= 1
        if item is not None:
            self._put(channel, item)

    def _put(self, channel: _Stream, item) -> None:
        self._outbox.setdefault(channel.loop, []).append((channel, item))

    def _flush(self) -> None:
        """Hand the items queued this iteration to their event loops, one wake-up per loop."""
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # that event loop is closed
                pass

    def _fail_all(self, error: BaseException) -> None:
        for channel in self._streams.values():
            self._done(channel, error)
        self._streams.clear()

    def _snapshot(self) -> dict:
        s = self._engine.stats()
        used = 1 - s["num_free_blocks"] / max(1, s["num_blocks"])
        return {"num_running": s["num_running"], "num_waiting": s["num_waiting"],
                "num_blocks": s["num_blocks"], "num_free_blocks": s["num_free_blocks"],
                "kv_cache_usage": used, "prefix_cache_queries": s["prefix_cache_queries"],
                "prefix_cache_hits": s["prefix_cache_hits"], **self._counters,
                **{k: v for k, v in s.items() if k.startswith("spec_")}}
