"""The servers' small HTTP endpoint on PSJOB_PROGRESS_PORT: GET /progress and GET /metrics.

The stdlib's ThreadingHTTPServer in a daemon thread: a handler only formats numbers the server
already holds, so training never waits on a client. A client is hostile until proven otherwise:
only GET, only the known paths (404 otherwise), a few seconds to send its request, small answers,
and at most MAX_CONNECTIONS at once (more are closed at once), so a slow or silent client costs a
thread for seconds, not the server's memory or its training. A client that hangs up early is
quietly let go.
"""

import socket
import sys
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from psjob_runtime.log import log

REQUEST_TIMEOUT_SECONDS = 5.0
MAX_CONNECTIONS = 16

Route = Callable[[], tuple[str, bytes]]
"""Builds one answer: its content type and body."""


class _Handler(BaseHTTPRequestHandler):
    timeout = REQUEST_TIMEOUT_SECONDS
    server: "ProgressHTTPServer"

    def do_GET(self) -> None:
        route = self.server.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self._answer(404, "text/plain; charset=utf-8", b"not found\n")
            return
        try:
            content_type, body = route()
        except Exception as error:  # an answer failed; the server and its training go on
            log(f"progress endpoint {self.path}: {type(error).__name__}: {error}")
            self._answer(500, "text/plain; charset=utf-8", b"internal error\n")
            return
        self._answer(200, content_type, body)

    def _answer(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a scrape every few seconds would drown the server's log."""


class ProgressHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = MAX_CONNECTIONS

    def __init__(self, port: int, routes: Mapping[str, Route]):
        super().__init__(("0.0.0.0", port), _Handler)
        self.routes = dict(routes)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: close, never queue
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up before its answer is written (a scraper's timeout) is no
        failure of the server: nothing is printed. Anything else is one line in the server's
        log, not the stdlib's traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            return
        log(f"progress endpoint: a request from {client_address[0]} failed: {error!r}")

    def get_request(self) -> tuple[socket.socket, Any]:
        request, address = super().get_request()
        request.settimeout(REQUEST_TIMEOUT_SECONDS)
        return request, address


def start(port: int, routes: Mapping[str, Route], who: str) -> ProgressHTTPServer | None:
    """Serve `routes` on `port` in a daemon thread; None (and a log line) if the port is taken.

    Training matters more than its progress: a port that cannot be bound is reported, not fatal.
    """
    try:
        server = ProgressHTTPServer(port, routes)
    except OSError as error:
        log(f"{who}: cannot serve progress on port {port} ({error}); training goes on without it")
        return None
    thread = threading.Thread(target=server.serve_forever, name="progress-http", daemon=True)
    thread.start()
    return server
