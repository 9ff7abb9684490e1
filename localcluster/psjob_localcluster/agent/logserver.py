"""The kubelet's container-log endpoint, so that ``kubectl logs [-f]`` works through the API
server.

The API server reaches a node at its InternalIP and ``daemonEndpoints.kubeletEndpoint.Port``
over HTTPS with its kubelet client certificate: the server requires a client certificate from
the cluster CA. ``GET /containerLogs/<ns>/<pod>/<container>`` supports ``follow``,
``tailLines``, ``limitBytes`` and ``previous``; logs carry no timestamps, so ``timestamps`` and
``sinceSeconds`` are ignored.
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol

FOLLOW_POLL_SECONDS = 0.1


class LogSource(Protocol):
    """The logs of one pod's containers (a pod worker)."""

    def container_logs(self, container: str) -> list[Path]: ...

    def container_running(self, container: str) -> bool: ...


Finder = Callable[[str, str], LogSource | None]


def _tail(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    kept = data.splitlines(keepends=True)[-lines:]
    return b"".join(kept)


class _Handler(BaseHTTPRequestHandler):
    server: _LogServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the API server polls often during `kubectl logs -f`."""

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        if len(parts) != 4 or parts[0] != "containerLogs":
            self.send_error(404, "only /containerLogs/<namespace>/<pod>/<container> is served")
            return
        _, namespace, pod, container = parts
        query = urllib.parse.parse_qs(url.query)
        source = self.server.find(namespace, pod)
        try:
            logs = source.container_logs(container) if source is not None else []
        except KeyError:
            logs = []
        previous = query.get("previous", ["false"])[0] == "true"
        wanted = logs[-2] if previous and len(logs) > 1 else (logs[-1] if logs else None)
        if source is None or wanted is None or (previous and len(logs) < 2):
            self.send_error(404, f"no logs of container {container} in pod {namespace}/{pod}")
            return
        follow = query.get("follow", ["false"])[0] == "true" and not previous
        limit = int(query.get("limitBytes", ["0"])[0]) or None
        tail_lines = int(query["tailLines"][0]) if "tailLines" in query else None
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        data = wanted.read_bytes()
        offset = len(data)
        if tail_lines is not None:
            data = _tail(data, tail_lines)
        sent = self._send(data, limit, 0)
        while follow and (limit is None or sent < limit):
            if (
                not source.container_running(container)
                or source.container_logs(container)[-1] != wanted
            ):
                follow = False  # drain what was written before the exit
            with open(wanted, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            offset += len(chunk)
            try:
                sent = self._send(chunk, limit, sent)
            except (BrokenPipeError, ConnectionResetError):
                return
            if not chunk:
                time.sleep(FOLLOW_POLL_SECONDS)

    def _send(self, data: bytes, limit: int | None, sent: int) -> int:
        if limit is not None:
            data = data[: max(0, limit - sent)]
        if data:
            self.wfile.write(data)
            self.wfile.flush()
        return sent + len(data)


class _LogServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, find: Finder) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.find = find


class LogServer:
    """Serves container logs over HTTPS on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, find: Finder, *, cert: Path, key: Path, client_ca: Path) -> None:
        self._server = _LogServer(find)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        context.load_verify_locations(str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="log-server", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
