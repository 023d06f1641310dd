"""uvicorn around the app: a socket bound before the engine thread matters, limits against
stalled sockets, and a SIGTERM / Ctrl-C that drains in-flight requests first."""
from __future__ import annotations

import logging
import socket
import threading

import uvicorn

from litevllm_openai.server import ServerConfig, build_app

log = logging.getLogger("litevllm.openai")


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM / SIGINT: stop accepting (uvicorn), and let the engine finish the
    requests in flight for up to ``shutdown_timeout`` seconds; the rest end with an error
    (an error chunk in streams). A second signal exits at once."""

    def __init__(self, config: uvicorn.Config, engine, shutdown_timeout: float):
        super().__init__(config)
        self.engine, self.shutdown_timeout = engine, shutdown_timeout
        self.drain: threading.Thread | None = None

    def handle_exit(self, sig, frame) -> None:
        if self.drain is None:
            log.warning("shutting down: draining requests for up to %.0f s", self.shutdown_timeout)
            self.drain = threading.Thread(target=self.engine.shutdown,
                                          args=(self.shutdown_timeout,), daemon=True)
            self.drain.start()
        super().handle_exit(sig, frame)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def make_server(engine, config: ServerConfig, host: str = "127.0.0.1", port: int = 8000, *,
                shutdown_timeout: float = 30.0, timeout_keep_alive: float = 5.0,
                limit_concurrency: int = 4096, log_level: str = "warning"):
    """(server, socket): ``server.run(sockets=[socket])`` serves until SIGTERM / should_exit."""
    sock = bind(host, port)  # a busy port fails here, before serving
    uv = uvicorn.Config(build_app(engine, config), log_level=log_level, access_log=False,
                        server_header=False, timeout_keep_alive=timeout_keep_alive,
                        limit_concurrency=limit_concurrency,
                        timeout_graceful_shutdown=shutdown_timeout + 5, lifespan="off")
    return DrainingServer(uv, engine, shutdown_timeout), sock
