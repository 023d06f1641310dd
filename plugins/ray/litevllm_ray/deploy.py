"""The Ray Serve application: an ingress running the OpenAI app, N engine replicas behind the
prefix-aware router, and a board where replicas post their health and counters."""
from __future__ import annotations

import asyncio
import time

from ray import serve

STALE_S = 5.0  # a replica that has not posted for this long counts as gone


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class StatsBoard:
    """Each replica's latest ``stats()`` (plus ``healthy``), for the ingress's /health, /metrics."""

    def __init__(self):
        self.posts: dict[str, tuple[float, dict]] = {}

    def post(self, replica: str, stats: dict) -> None:
        self.posts[replica] = (time.monotonic(), stats)

    def snapshot(self) -> dict[str, dict]:
        now = time.monotonic()
        self.posts = {r: p for r, p in self.posts.items() if now - p[0] < STALE_S}
        return {r: stats for r, (_, stats) in self.posts.items()}


@serve.deployment
class EngineReplica:
    """One LitevLLM engine (one GPU on CUDA) behind an ``AsyncLLMEngine``."""

    def __init__(self, options: dict, max_waiting: int | None, board):
        from litevllm import AsyncLLMEngine
        from litevllm.plugin_api import build_llm
        self.engine = AsyncLLMEngine(build_llm(options), max_waiting=max_waiting)
        self.name = serve.get_replica_context().replica_id.unique_id
        self.board = board
        self._poster = asyncio.get_event_loop().create_task(self._post())

    async def generate(self, prompt: dict, params, request_id: str, stream: bool):
        """Streams ``(replica name, RequestOutput)``; the router reads ``prompt`` (token ids)."""
        async for out in self.engine.generate(prompt, params, request_id, stream=stream):
            yield self.name, out

    def info(self) -> dict:
        e = self.engine
        return {"tokenizer": e.tokenizer, "max_model_len": e.max_model_len,
                "vocab_size": e.vocab_size, "max_num_seqs": e.max_num_seqs}

    def check_health(self) -> None:
        """Ray Serve's health probe: a dead or stalled engine loop gets the replica replaced."""
        if not self.engine.healthy():
            raise RuntimeError("the engine loop is dead or stalled")

    async def _post(self) -> None:
        while True:
            try:
                await self.board.post.remote(self.name, {**self.engine.stats(),
                                                         "healthy": self.engine.healthy()})
            except Exception:  # noqa: BLE001  (the board restarts; post again next time)
                pass
            await asyncio.sleep(1.0)

    def __del__(self):
        self.engine.shutdown(0)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Ingress:
    """The single-process server's app, over ``RemoteEngine`` instead of a local engine."""

    async def __init__(self, replicas, board, config):
        from litevllm_ray.remote_engine import RemoteEngine
        self.config = config
        self.engine = RemoteEngine(replicas, board, await replicas.info.remote())

    def __serve_build_asgi_app__(self):
        from litevllm_openai.server import build_app
        from litevllm_ray.headers import ReplicaHeader
        return ReplicaHeader(build_app(self.engine, self.config))
