"""Run the OpenAI-compatible app with uvicorn: in the foreground (the CLI), or on a thread (tests, embedding)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from gptoss.runtime import Engine

from .app import DEFAULT_MAX_QUEUE, create_app

log = logging.getLogger(__name__)


def serve(engine: Engine, host: str, port: int, model_name: str, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    server = _server(engine, model_name, max_queue)
    sock = _listen(host, port)
    log.info("serving %s at http://%s:%d/v1 (max batch %d, queue %d)", model_name, host, _port(sock),
             engine.manifest.max_batch, max_queue)  # fmt: skip
    server.run(sockets=[sock])


@contextmanager
def serve_in_background(
    engine: Engine, model_name: str, host: str = "127.0.0.1", port: int = 0, max_queue: int = DEFAULT_MAX_QUEUE
) -> Iterator[str]:
    """Serve on a thread (port 0: a free one) while the block runs; yields the base URL (`http://host:port`)."""
    server = _server(engine, model_name, max_queue)
    sock = _listen(host, port)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="gptoss-serve", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server stopped while starting (see the log)")
            time.sleep(0.01)
        yield f"http://{host}:{_port(sock)}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


def _server(engine: Engine, model_name: str, max_queue: int) -> uvicorn.Server:
    app = create_app(engine, model_name, max_queue)
    # log_config=None: uvicorn logs through the loggers the caller configured.
    config = uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket (port 0: a free one), so the address is known before the server starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _port(sock: socket.socket) -> int:
    return sock.getsockname()[1]
