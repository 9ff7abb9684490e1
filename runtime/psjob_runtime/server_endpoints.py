"""What a server answers on PSJOB_PROGRESS_PORT: /metrics on every server, /progress on server 0.

Kept out of server.py, which serves workers: this only reads numbers the server already keeps
(without its locks, so a scrape never waits on a step, at the price of numbers a step apart).
"""

import json
from typing import TYPE_CHECKING

from psjob_runtime import metrics, progress_http
from psjob_runtime.progress_http import ProgressHTTPServer, Route
from psjob_runtime.training import Mode

if TYPE_CHECKING:
    from psjob_runtime.server import ParameterServer


def reading(server: "ParameterServer") -> metrics.ServerReading:
    gate, counts, mode = server.gate, server.listener.counts, server.ctx.training.mode
    tables = list(server.tables.values())
    staleness = max_staleness = None
    if gate is not None and mode is not Mode.SYNC:
        clocks = [gate.clock[worker] for worker in list(gate.active)]
        staleness = max(clocks) - min(clocks) if clocks else 0
        max_staleness = gate.max_lead if mode is Mode.SSP else None
    return metrics.ServerReading(
        updates=gate.updates if gate is not None else 0,
        received_bytes=sum(list(counts.received.values())),
        sent_bytes=sum(list(counts.sent.values())),
        table_rows=sum(shard.held_rows for shard in tables),
        table_bytes=sum(shard.held_bytes for shard in tables),
        checkpoint_seconds=server.checkpoint_seconds,
        staleness=staleness,
        max_staleness=max_staleness,
    )


def start(server: "ParameterServer") -> ProgressHTTPServer | None:
    """Serve the endpoints on the contract's port; None where PSJOB_PROGRESS_PORT is 0."""
    ctx = server.ctx
    if ctx.progress_port == 0:
        return None
    labels = {
        "job": ctx.job_name,
        "namespace": ctx.namespace,
        "role": ctx.role.value,
        "index": str(ctx.replica_index),
    }
    board = server.board

    def metrics_text() -> tuple[str, bytes]:
        progress = board.summary() if board is not None else None
        return metrics.CONTENT_TYPE, metrics.render(labels, reading(server), progress).encode()

    routes: dict[str, Route] = {"/metrics": metrics_text}
    if board is not None:
        routes["/progress"] = lambda: ("application/json", json.dumps(board.summary()).encode())
    return progress_http.start(ctx.progress_port, routes, f"server {ctx.replica_index}")
