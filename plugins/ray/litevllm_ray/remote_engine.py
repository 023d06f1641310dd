"""``RemoteEngine``: the public engine API (``AsyncLLMEngine``'s) over Ray Serve replicas.

The ingress builds the OpenAI app from ``litevllm-plugin-openai`` over this object, so routes,
auth, limits and metrics are the single-process server's own. Text is tokenized here, at the
ingress, so the request router sees token ids and can route by prompt prefix.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from concurrent.futures import ThreadPoolExecutor
from itertools import zip_longest

from ray import exceptions as rex

from litevllm.plugin_api import EngineDeadError, chat_prompt_ids, check_request
from litevllm_ray.headers import note_replica

log = logging.getLogger("litevllm.ray")

# a replica that died or cannot be reached: retried elsewhere while nothing was streamed
_REPLICA_GONE = (rex.ActorDiedError, rex.ActorUnavailableError, rex.RayActorError)


class RemoteEngine:
    def __init__(self, handle, board, info: dict, refresh_s: float = 1.0, retries: int = 2):
        self._stream, self._board = handle.options(stream=True), board
        self.tokenizer = info["tokenizer"]
        self.max_model_len, self.vocab_size = info["max_model_len"], info["vocab_size"]
        self.max_num_seqs = info["max_num_seqs"]
        self.retries, self.refresh_s = retries, refresh_s
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="litevllm-tokenize")
        self._ids = itertools.count()
        self._stats: dict = {}
        self.replica_stats: dict[str, dict] = {}  # replica name -> its engine's stats()
        self._healthy = True
        self._refresher: asyncio.Task | None = None

    # tokenizer ---------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, token_ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], chat_template: str | None = None) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages, chat_template)

    async def run_in_pool(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # requests ----------------------------------------------------------------------------------
    def check_request(self, prompt_token_ids: list[int], params) -> None:
        """The checks that need no replica; the replica repeats them all at its first output."""
        self._ensure_refresher()
        if not self._healthy:
            raise EngineDeadError("no replica is ready")
        check_request(list(prompt_token_ids), params, self.vocab_size, self.max_model_len)

    async def generate(self, prompt, params=None, request_id: str | None = None, *,
                       stream: bool = True):
        """As ``AsyncLLMEngine.generate``; the HTTP reply names the replica that served it. A replica that dies before anything was yielded is replaced by another; after that the
        request ends with ``EngineDeadError``."""
        self._ensure_refresher()
        request_id = request_id or f"req-{next(self._ids)}"
        if isinstance(prompt, str):
            prompt = {"prompt": prompt, "prompt_token_ids": await self.run_in_pool(self.encode, prompt)}
        elif isinstance(prompt, (list, tuple)):
            prompt = {"prompt_token_ids": list(prompt)}
        for attempt in range(self.retries + 1):
            gen = self._stream.generate.remote(prompt, params, request_id, stream)
            yielded = False
            try:
                async for replica, out in gen:
                    if not yielded:
                        note_replica(replica)
                    yielded = True
                    yield out
                return
            except rex.RayTaskError as e:  # the replica raised: re-raise its own error
                raise e.cause if isinstance(e.cause, Exception) else EngineDeadError(str(e)) from None
            except _REPLICA_GONE as e:
                if yielded or attempt == self.retries:
                    raise EngineDeadError("the replica serving this request stopped") from e
                log.warning("replica unavailable before %s started; retrying elsewhere", request_id)
            finally:
                gen.cancel()  # a no-op once finished; aborts the request on the replica otherwise

    def abort(self, request_id: str) -> None:
        """Cancelling the stream (leaving ``generate``) aborts the request on its replica."""

    # state -------------------------------------------------------------------------------------
    def stats(self) -> dict:
        """The replicas' counters summed (refreshed every ``refresh_s``)."""
        self._ensure_refresher()
        return dict(self._stats)

    def healthy(self) -> bool:
        """Whether any replica answered its last health probe."""
        self._ensure_refresher()
        return self._healthy

    def shutdown(self, timeout: float = 30.0) -> None:
        if self._refresher is not None:
            self._refresher.cancel()

    def _ensure_refresher(self) -> None:
        if self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        while True:
            try:
                self.replica_stats = await self._board.snapshot.remote()
                self._healthy = any(s.get("healthy") for s in self.replica_stats.values())
                self._stats = _sum(self.replica_stats.values())
            except Exception as e:  # noqa: BLE001  (no replica reachable right now)
                log.debug("stats refresh failed: %s", e)
                self._healthy = False
            await asyncio.sleep(self.refresh_s)


def _sum(stats) -> dict:
    """Counters and gauges summed over replicas (lists of numbers element-wise); the ratios
    computed again from the sums."""
    total: dict = {}
    for s in stats:
        for key, value in s.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
            elif isinstance(value, list):  # spec_num_accepted_tokens_per_pos
                total[key] = [a + b for a, b in zip_longest(total.get(key, []), value, fillvalue=0)]
    if total.get("num_blocks"):
        total["kv_cache_usage"] = 1 - total.get("num_free_blocks", 0) / total["num_blocks"]
    if "spec_num_drafts" in total:
        drafts, accepted = total["spec_num_drafts"], total["spec_num_accepted_tokens"]
        total["spec_acceptance_rate"] = accepted / max(1, total["spec_num_draft_tokens"])
        total["spec_mean_acceptance_length"] = 1 + accepted / drafts if drafts else 0.0
    return total
