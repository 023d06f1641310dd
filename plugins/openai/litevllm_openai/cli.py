"""The ``lite serve`` command."""
import ipaddress
import os

import click

from litevllm.plugin_api import build_llm, engine_options, fail


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@click.command("serve")
@engine_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; other than loopback, set --api-key too.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--served-model-name", default=None,
              help="Model name clients send (default: the --model argument).")
@click.option("--api-key", default=None, help="Require 'Authorization: Bearer KEY' "
              "(default: $LITEVLLM_API_KEY); /health stays open.")
@click.option("--allowed-origins", default="", help="Comma-separated CORS origins (default none).")
@click.option("--max-request-bytes", type=click.IntRange(1024), default=4 * 2**20,
              show_default=True, help="Larger bodies get 413 before parsing.")
@click.option("--max-logprobs", type=click.IntRange(0), default=20, show_default=True)
@click.option("--max-n", type=click.IntRange(1), default=16, show_default=True)
@click.option("--max-stop", type=click.IntRange(0), default=64, show_default=True,
              help="Most stop strings + stop token ids per request.")
@click.option("--max-waiting-requests", type=click.IntRange(1), default=1024, show_default=True,
              help="Beyond this many waiting requests: 503 with Retry-After.")
@click.option("--shutdown-timeout", type=click.FloatRange(0), default=30.0, show_default=True,
              help="Seconds SIGTERM waits for in-flight requests before aborting them.")
@click.option("--timeout-keep-alive", type=click.FloatRange(0), default=5.0, show_default=True,
              help="Seconds an idle keep-alive connection is held.")
@click.option("--limit-concurrency", type=click.IntRange(1), default=4096, show_default=True,
              help="Most open connections; beyond it 503.")
@click.option("--replicas", type=click.IntRange(1), default=None,
              help="Run N engine replicas on Ray Serve (needs litevllm-plugin-ray).")
@click.option("--min-replicas", type=click.IntRange(0), default=None,
              help="Autoscale on queue length, down to this many replicas (Ray Serve).")
@click.option("--max-replicas", type=click.IntRange(1), default=None,
              help="Autoscale up to this many replicas (Ray Serve).")
@click.option("--ray-address", default=None,
              help="Join this Ray cluster ('auto' or HOST:PORT); default: start a local one.")
@click.option("--gpus-per-replica", type=click.FloatRange(0, min_open=True), default=None,
              help="GPUs per replica (default 1 when the cluster has GPUs; 0.5 shares one).")
@click.option("--cpus-per-replica", type=click.FloatRange(0), default=1.0, show_default=True,
              help="CPUs per replica.")
def serve(host, port, served_model_name, api_key, allowed_origins, max_request_bytes,
          max_logprobs, max_n, max_stop, max_waiting_requests, shutdown_timeout,
          timeout_keep_alive, limit_concurrency, replicas, min_replicas, max_replicas,
          ray_address, gpus_per_replica, cpus_per_replica, **options):
    """Serve the model over an OpenAI-compatible HTTP API (FastAPI + uvicorn)."""
    from litevllm import AsyncLLMEngine
    from litevllm_openai.protocol import Limits
    from litevllm_openai.runner import make_server
    from litevllm_openai.server import ServerConfig
    api_key = api_key or os.environ.get("LITEVLLM_API_KEY") or None
    if not _is_loopback(host) and not api_key:
        click.echo(f"warning: serving on {host} without an API key: anyone who can reach it "
                   f"can use it (set --api-key or LITEVLLM_API_KEY)", err=True)
    config = ServerConfig(served_model_name or options["model"], api_key,
                          [o.strip() for o in allowed_origins.split(",") if o.strip()],
                          max_request_bytes, Limits(max_logprobs=max_logprobs, max_n=max_n,
                                                    max_stop=max_stop))
    scale_out = (replicas, min_replicas, max_replicas, ray_address, gpus_per_replica)
    if any(v is not None for v in scale_out):
        try:
            from litevllm_ray.launch import serve_replicas
        except ImportError:
            fail("--replicas, --min/max-replicas, --ray-address and --gpus-per-replica run on "
                 "Ray Serve: pip install litevllm-plugin-ray")
        try:
            return serve_replicas(options, config, host, port, ray_address=ray_address,
                                  shutdown_timeout=shutdown_timeout, replicas=replicas or 1,
                                  min_replicas=min_replicas, max_replicas=max_replicas,
                                  gpus_per_replica=gpus_per_replica,
                                  cpus_per_replica=cpus_per_replica,
                                  max_waiting=max_waiting_requests)
        except Exception as e:
            fail(e)
    engine = None
    try:
        engine = AsyncLLMEngine(build_llm(options), max_waiting=max_waiting_requests)
        server, sock = make_server(engine, config, host, port, shutdown_timeout=shutdown_timeout,
                                   timeout_keep_alive=timeout_keep_alive,
                                   limit_concurrency=limit_concurrency, log_level="info")
    except Exception as e:
        if engine is not None:
            engine.shutdown(0)
        fail(e)
    click.echo(f"serving '{config.model_name}' on http://{host}:{sock.getsockname()[1]}/v1 "
               f"(Ctrl-C to stop)", err=True)
    try:
        server.run(sockets=[sock])
    finally:
        if server.drain is not None:
            server.drain.join(shutdown_timeout + 10)
        engine.shutdown(0)
