"""``lite serve --replicas N``: start (or join) a Ray cluster and run the app on Ray Serve."""
from __future__ import annotations

import logging
import signal
import socket
import sys
import threading

log = logging.getLogger("litevllm.ray")
APP = "litevllm"


def placement(options: dict, gpus_per_replica: float | None, cpus_per_replica: float) -> dict:
    """Ray actor options for one engine replica (and the engine options it needs for them)."""
    import ray
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0 and options.get("device") != "cpu"
    gpus = (1.0 if has_gpu else 0.0) if gpus_per_replica is None else gpus_per_replica
    if gpus and not has_gpu:
        raise ValueError("--gpus-per-replica is set but the Ray cluster has no GPU")
    return {"num_gpus": gpus, "num_cpus": cpus_per_replica} if gpus else {"num_cpus": cpus_per_replica}


def build(options: dict, config, *, shutdown_timeout: float, replicas: int, min_replicas: int | None,
          max_replicas: int | None, gpus_per_replica: float | None, cpus_per_replica: float,
          max_waiting: int | None, routing: str = "prefix", imbalance: int = 8):
    """The Serve application (not yet running); ``routing`` is "prefix" or "round_robin"."""
    from ray.serve.config import RequestRouterConfig

    from litevllm_ray.deploy import EngineReplica, Ingress, StatsBoard
    from litevllm_ray.router import PrefixAwareRouter, RoundRobinRouter
    actor = placement(options, gpus_per_replica, cpus_per_replica)
    options = dict(options)
    if 0 < actor.get("num_gpus", 0) < 1:  # replicas share a GPU: each takes its share of memory
        options["gpu_memory_utilization"] = (options.get("gpu_memory_utilization") or 0.9) \
            * actor["num_gpus"]
    max_seqs = options.get("max_num_seqs") or 256
    per_replica = max_seqs + (max_waiting or max_seqs)   # running + waiting
    scale, hi = {"num_replicas": replicas}, replicas
    if min_replicas is not None or max_replicas is not None:
        lo = replicas if min_replicas is None else min_replicas
        hi = max(lo, replicas if max_replicas is None else max_replicas)
        scale = {"autoscaling_config": {"min_replicas": lo, "max_replicas": hi,
                                        "initial_replicas": min(max(replicas, lo), hi),
                                        "target_ongoing_requests": max_seqs}}
    router = RequestRouterConfig(request_router_class=PrefixAwareRouter,
                                 request_router_kwargs={"imbalance": imbalance}) \
        if routing == "prefix" else RequestRouterConfig(request_router_class=RoundRobinRouter)
    board = StatsBoard.bind()
    engines = EngineReplica.options(
        ray_actor_options=actor, max_ongoing_requests=per_replica,
        request_router_config=router, health_check_period_s=5, health_check_timeout_s=30,
        graceful_shutdown_timeout_s=shutdown_timeout,
        **scale).bind(options, max_waiting, board)
    # the ingress holds every stream open for its whole length: let it pass on all that the
    # replicas can hold (Ray Serve's default of 5 would queue the rest at the proxy)
    return Ingress.options(max_ongoing_requests=hi * per_replica).bind(engines, board, config)


def serve_replicas(options: dict, config, host: str, port: int, *, ray_address: str | None,
                   shutdown_timeout: float, **scale) -> None:
    """Run until SIGTERM / Ctrl-C; a cluster started here is stopped on exit."""
    import ray
    from ray import serve
    started_here = ray_address is None
    if port == 0 and not started_here:
        raise ValueError("--port 0 needs the local cluster: with --ray-address the Serve proxy "
                         "binds on the cluster's nodes, so give a fixed --port")
    if port == 0:  # Ray Serve's proxy needs a fixed port: take a free one, as uvicorn would
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    ray.init(address=ray_address, namespace=APP, include_dashboard=False,
             configure_logging=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build(options, config, shutdown_timeout=shutdown_timeout, **scale), name=APP, route_prefix="/", blocking=False)
        print(f"serving '{config.model_name}' on http://{host}:{port}/v1 with Ray Serve "
              f"(Ctrl-C to stop)", file=sys.stderr, flush=True)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(0.5):
            pass
        log.warning("shutting down: draining replicas for up to %.0f s", shutdown_timeout)
    finally:
        try:
            serve.delete(APP)
            if started_here:
                serve.shutdown()
        finally:
            if started_here:
                ray.shutdown()
