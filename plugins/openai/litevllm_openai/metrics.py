"""/metrics: Prometheus exposition under vLLM's metric names, so existing dashboards and
gateways (the Kubernetes inference gateway reads vllm:kv_cache_usage_perc) work unchanged."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)


class _EngineCollector:
    """Gauges and counters read from ``AsyncLLMEngine.stats()`` at scrape time."""

    def __init__(self, engine, model_name: str):
        self.engine, self.labels = engine, {"model_name": model_name}

    def _family(self, cls, name, doc, value):
        family = cls(name, doc, labels=list(self.labels))
        family.add_metric(list(self.labels.values()), value)
        return family

    def collect(self):
        s = self.engine.stats()
        g, c = GaugeMetricFamily, CounterMetricFamily
        yield self._family(g, "vllm:num_requests_running", "Requests in the running batch.",
                           s["num_running"])
        yield self._family(g, "vllm:num_requests_waiting", "Requests waiting to be scheduled.",
                           max(s["num_waiting"], s["num_unfinished"] - s["num_running"]))
        yield self._family(g, "vllm:kv_cache_usage_perc", "KV-cache usage (1 = full).",
                           s["kv_cache_usage"])
        yield self._family(c, "vllm:prompt_tokens", "Prompt tokens received.", s["prompt_tokens"])
        yield self._family(c, "vllm:generation_tokens", "Tokens generated.",
                           s["generation_tokens"])
        yield self._family(c, "vllm:prefix_cache_queries", "Prefix-cache queries (tokens).",
                           s["prefix_cache_queries"])
        yield self._family(c, "vllm:prefix_cache_hits", "Prefix-cache hits (tokens).",
                           s["prefix_cache_hits"])
        if "spec_num_drafts" in s:  # speculative decoding is on
            yield from self._spec_decode(s)

    def _spec_decode(self, s):
        c = CounterMetricFamily
        yield self._family(c, "vllm:spec_decode_num_drafts",
                           "Speculative drafts verified (one per sequence and verify step).",
                           s["spec_num_drafts"])
        yield self._family(c, "vllm:spec_decode_num_draft_tokens", "Draft tokens proposed.",
                           s["spec_num_draft_tokens"])
        yield self._family(c, "vllm:spec_decode_num_accepted_tokens", "Draft tokens accepted.",
                           s["spec_num_accepted_tokens"])
        per_pos = c("vllm:spec_decode_num_accepted_tokens_per_pos",
                    "Draft tokens accepted, by position in the draft.",
                    labels=[*self.labels, "position"])
        for position, n in enumerate(s.get("spec_num_accepted_tokens_per_pos", ())):
            per_pos.add_metric([*self.labels.values(), str(position)], n)
        yield per_pos


class Metrics:
    """One registry per server (several servers may share a process in tests)."""

    def __init__(self, engine, model_name: str):
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(engine, model_name))
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token.",
                              ["model_name"], buckets=TTFT_BUCKETS, registry=self.registry
                              ).labels(model_name)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Time between output tokens.",
                             ["model_name"], buckets=ITL_BUCKETS, registry=self.registry
                             ).labels(model_name)

    def observe(self, out) -> None:
        """TTFT and mean inter-token latency of a finished request (engine timestamps)."""
        metrics = out.metrics
        if metrics is None or metrics.first_token_time is None or not out.outputs:
            return
        self.ttft.observe(max(0.0, metrics.first_token_time - metrics.arrival_time))
        n = len(out.outputs[0].token_ids)
        if n > 1 and metrics.finished_time is not None:
            gap = max(0.0, metrics.finished_time - metrics.first_token_time) / (n - 1)
            for _ in range(min(n - 1, 1024)):
                self.itl.observe(gap)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
