"""`psjob operator`: kopf with leader election, a health and metrics endpoint, clean shutdown."""

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import kopf
from kopf._core.engines.peering import Identity  # kopf exports the type only here

from psjob_operator import handlers, health, queueing
from psjob_operator.leader import LeaderElector
from psjob_operator.pod_policy import PodPolicy

log = logging.getLogger("psjob.operator")

EXIT_LOST_LEADERSHIP = 3


@dataclass(frozen=True)
class OperatorOptions:
    namespaces: list[str] = field(default_factory=list)
    """Namespaces to watch; empty means all of them."""
    http_port: int = 8080
    leader_election_namespace: str | None = None
    leader_election_id: str = "psjob-operator"
    pod_policy: PodPolicy = PodPolicy.UNRESTRICTED
    """Which pod template settings the operator refuses to create (pod_policy)."""
    kueue: bool = False
    """Queue the jobs labelled kueue.x-k8s.io/queue-name through Kueue (docs/kueue.md)."""
    progress_interval: float = 10.0
    """Seconds between two reads of each running job's progress; 0: none (progress_reader)."""
    network_policy: bool = True
    """Give every job that does not turn it off a NetworkPolicy (isolation.py)."""
    network_peers: tuple[dict[str, Any], ...] = ()
    """Who besides a job's pods may reach its servers' progress port (NetworkPolicyPeers)."""


def _identity() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


async def run(options: OperatorOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await health.serve(options.http_port)
    elector: LeaderElector | None = None
    lease_namespace = options.leader_election_namespace or os.environ.get("POD_NAMESPACE")
    try:
        if lease_namespace:
            elector = LeaderElector(
                handlers.api_client(), lease_namespace, options.leader_election_id, _identity()
            )
            acquiring = asyncio.create_task(elector.acquire())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                acquiring.cancel()
                return 0
        return await _operate(options, stop, elector)
    finally:
        if elector is not None:
            await asyncio.to_thread(elector.release)
        await server.cleanup()


async def _operate(
    options: OperatorOptions, stop: asyncio.Event, elector: LeaderElector | None
) -> int:
    """Run kopf until it stops itself, `stop` is set or the leadership is lost.

    Once running, kopf installs its own SIGTERM and SIGINT handlers and stops itself on them.
    Any other stop cancels kopf's task, which kopf takes as a prompt shutdown. kopf's stop flag
    is not used: when a signal stops kopf, it waits 5 s for a flag that nobody raises.
    """
    if options.kueue:
        queueing.register_handlers(kopf.get_default_registry())
    operator = asyncio.create_task(
        kopf.operator(
            # kopf's default identity asks the password database for the user's name, which a
            # container run as a uid without a passwd entry (the image's 65532, OpenShift's
            # random uids) does not have: the operator crashed at start-up on the kubelet node
            identity=Identity(f"psjob-operator@{socket.gethostname()}"),
            standalone=True,
            clusterwide=not options.namespaces,
            namespaces=options.namespaces,
            memo=kopf.Memo(
                pod_policy=options.pod_policy,
                kueue=options.kueue,
                progress_interval=options.progress_interval,
                network_policy=options.network_policy,
                network_peers=options.network_peers,
            ),
        )
    )
    stopping = asyncio.create_task(stop.wait())
    watchers = {operator, stopping}
    keeping = asyncio.create_task(elector.keep()) if elector else None
    if keeping:
        watchers.add(keeping)
    await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
    lost = keeping is not None and keeping.done() and keeping.exception() is not None
    stopping.cancel()
    operator.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await operator
    if keeping is not None and not keeping.done():
        keeping.cancel()
    if lost:
        assert keeping is not None
        log.error("stopping: %s", keeping.exception())
        return EXIT_LOST_LEADERSHIP
    return 0
