"""Prefix-cache-aware routing on Ray Serve's ``RequestRouter`` extension point.

A request goes to the replica that already holds the longest prefix of its prompt (a chat's
system prompt and history), unless that replica's queue is longer than the shortest by more
than ``imbalance``; then, and for prompts nobody has seen, Ray Serve picks the least loaded.
"""
from __future__ import annotations

from ray.serve.request_router import FIFOMixin, RequestRouter

from litevllm_ray.prefix_table import PrefixTable, prefix_keys


def prompt_token_ids(pending_request) -> list[int] | None:
    """The token ids the ingress sent (``EngineReplica.generate(request)``), if any."""
    args = pending_request.args if pending_request is not None else ()
    request = args[0] if args else None
    ids = request.get("prompt_token_ids") if isinstance(request, dict) else None
    return ids if isinstance(ids, list) else None


class PrefixAwareRouter(FIFOMixin, RequestRouter):
    def initialize_state(self, block_size: int = 16, imbalance: int = 8, capacity: int = 200_000):
        self.table = PrefixTable(block_size, capacity)
        self.imbalance = imbalance

    def _queue_len(self, replica) -> int:
        return self.replica_queue_len_cache.get(replica.replica_id) or 0

    async def choose_replicas(self, candidate_replicas, pending_request=None):
        ids = prompt_token_ids(pending_request)
        if not candidate_replicas or ids is None:
            return [candidate_replicas]
        keys = prefix_keys(ids, self.table.block_size)
        by_id = {r.replica_id: r for r in candidate_replicas}
        owners, _ = self.table.longest_match(keys, by_id)
        if not owners:
            return [candidate_replicas]
        shortest = min(self._queue_len(r) for r in candidate_replicas)
        best = [by_id[i] for i in owners if self._queue_len(by_id[i]) - shortest <= self.imbalance]
        if not best:
            return [candidate_replicas]
        rest = [r for r in candidate_replicas if r not in best]
        return [best, rest] if rest else [best]

    def on_request_routed(self, pending_request, replica_id, result) -> None:
        ids = prompt_token_ids(pending_request)
        if ids is not None:
            self.table.record(prefix_keys(ids, self.table.block_size), replica_id)

    def on_replica_actor_died(self, replica_id) -> None:
        super().on_replica_actor_died(replica_id)
        self.table.forget(replica_id)
