"""Leader election on a coordination.k8s.io Lease, as controller-runtime does it.

Two operator replicas must never both act on a job. The holder renews the Lease every few
seconds; a standby takes it over once it has seen no renewal for a whole lease duration (judged
by its own clock, so clock skew between nodes does not matter), or at once when the holder
releases it on a clean shutdown.
"""

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client import ApiException

from psjob_operator.kube import CONFLICT, NOT_FOUND

log = logging.getLogger("psjob.operator.leader")


class LostLeadershipError(Exception):
    """The Lease could not be renewed in time: another replica may act now, so this one stops."""


@dataclass
class _Observed:
    holder: str | None
    renew_time: Any
    seen_at: float


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int = 15,
        renew_seconds: float = 5.0,
        retry_seconds: float = 2.0,
    ) -> None:
        self.leases = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.retry_seconds = retry_seconds
        self._observed: _Observed | None = None

    def _now(self) -> datetime:
        return datetime.now(UTC)

    def _spec(self, transitions: int, acquired: datetime | None) -> client.V1LeaseSpec:
        now = self._now()
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=self.lease_seconds,
            acquire_time=acquired or now,
            renew_time=now,
            lease_transitions=transitions,
        )

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards."""
        try:
            lease = self.leases.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != NOT_FOUND:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(0, None),
            )
            try:
                self.leases.create_namespaced_lease(self.namespace, body)
            except ApiException as create_exc:
                if create_exc.status == CONFLICT:
                    return False
                raise
            return True
        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity
        observed = self._observed
        if observed is None or (observed.holder, observed.renew_time) != (holder, spec.renew_time):
            self._observed = observed = _Observed(holder, spec.renew_time, time.monotonic())
        expired = time.monotonic() - observed.seen_at > (
            spec.lease_duration_seconds or self.lease_seconds
        )
        if holder and holder != self.identity and not expired:
            return False
        mine = holder == self.identity
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        lease.spec = self._spec(transitions, spec.acquire_time if mine else None)
        try:
            self.leases.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            if exc.status == CONFLICT:
                return False
            raise
        return True

    def release(self) -> None:
        """Hand the Lease back on a clean shutdown so that a standby takes over at once."""
        try:
            lease = self.leases.read_namespaced_lease(self.name, self.namespace)
            if lease.spec and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                self.leases.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            log.warning("could not release the leader lease: %s", exc.reason)

    async def acquire(self) -> None:
        log.info("waiting to lead (lease %s/%s) as %s", self.namespace, self.name, self.identity)
        while not await asyncio.to_thread(self._attempt):
            await asyncio.sleep(self.retry_seconds)
        log.info("leading as %s", self.identity)

    def _attempt(self) -> bool:
        try:
            return self.try_acquire_or_renew()
        except ApiException as exc:
            log.warning("leader election: %s", exc.reason)
            return False

    async def keep(self) -> None:
        """Renew until a renewal fails for longer than the lease lasts, then raise."""
        last_renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.renew_seconds)
            if await asyncio.to_thread(self._attempt):
                last_renewed = time.monotonic()
            elif time.monotonic() - last_renewed > self.lease_seconds - self.retry_seconds:
                raise LostLeadershipError(f"lease {self.namespace}/{self.name} was not renewed")
