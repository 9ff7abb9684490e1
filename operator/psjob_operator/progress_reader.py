"""The progress poller: reads server 0's GET /progress of every running job on a timer.

It runs beside the reconciler, never inside a reconcile: a read that hangs holds one of
`CONCURRENCY` slots for at most `TIMEOUT_SECONDS`, and a reconcile only ever looks at the last
reading kept here. A reading whose values changed triggers the job's reconcile, whose projection
(plan/projection.py) is the only writer of status.progress. The pod's IP and its port named
`progress` come from the pod index the reconciler already holds: no API request is made.
"""

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

import aiohttp

from psjob_operator import contract
from psjob_operator.controller import Key, Reconciler
from psjob_operator.models import Phase, Role
from psjob_operator.observe import PodView
from psjob_operator.progress import MAX_BODY, Reading, UnreadableProgressError, parse_body

log = logging.getLogger("psjob.operator.progress")

DEFAULT_INTERVAL_SECONDS = 10.0
CONCURRENCY = 8
"""Reads in flight at most, over all jobs."""
TIMEOUT_SECONDS = 3.0
"""A read that has not finished by then (connecting, headers and body) is given up."""
POLLED_PHASES = frozenset({Phase.RUNNING.value})


def progress_url(pods: Iterable[PodView]) -> str | None:
    """http://IP:PORT/progress of the job's running server 0, once it has an IP and the port."""
    for view in pods:
        if (
            view.role is Role.SERVER
            and view.index == 0
            and view.phase == "Running"
            and not view.deleting
            and view.ip
            and view.progress_port
        ):
            host = f"[{view.ip}]" if ":" in view.ip else view.ip
            return f"http://{host}:{view.progress_port}{contract.PROGRESS_PATH}"
    return None


class ProgressReader:
    def __init__(
        self,
        reconciler: Reconciler,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self.reconciler = reconciler
        self.interval = interval
        self.timeout = timeout
        self.slots = asyncio.Semaphore(CONCURRENCY)
        self.told: set[Key] = set()
        """Jobs whose unreadable body was logged: once per job, however often it is read."""

    async def run(self) -> None:
        """Read every running job's progress each `interval` seconds, until cancelled."""
        loop = asyncio.get_running_loop()
        # No decompression: a small gzip body must not unpack into a large one.
        async with aiohttp.ClientSession(
            auto_decompress=False, connector=aiohttp.TCPConnector(limit=CONCURRENCY)
        ) as session:
            while True:
                started = loop.time()
                try:
                    await self.read_all(session)
                except Exception:  # a bug here must not end progress for good
                    log.exception("reading the jobs' progress failed; trying again next round")
                await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))

    async def read_all(self, session: aiohttp.ClientSession) -> None:
        reconciler = self.reconciler
        running = {key for key, phase in reconciler.phases.items() if phase in POLLED_PHASES}
        for key in set(reconciler.readings) - running:
            del reconciler.readings[key]  # the job ended or is gone: its status keeps the last
        self.told &= running
        targets = {key: progress_url(reconciler.pods.get(key, ())) for key in running}
        await asyncio.gather(
            *(self.read(session, key, url) for key, url in targets.items() if url is not None)
        )

    async def read(self, session: aiohttp.ClientSession, key: Key, url: str) -> None:
        """One job's progress; any failure leaves the last reading as it was."""
        async with self.slots:
            try:
                async with asyncio.timeout(self.timeout):
                    body = await self._get(session, url)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.debug("no progress from %s for %s/%s: %r", url, *key, exc)
                return
            except UnreadableProgressError as exc:
                self._tell(key, url, exc)
                return
        read_time = datetime.now(UTC)
        try:
            parsed = parse_body(body)
        except UnreadableProgressError as exc:
            self._tell(key, url, exc)
            return
        self.told.discard(key)
        reading = Reading(
            parsed, read_time.replace(microsecond=read_time.microsecond // 1000 * 1000)
        )
        readings = self.reconciler.readings
        if not reading.says_anything() or key not in self.reconciler.phases:
            return
        if reading.same_values(readings.get(key)):
            return
        readings[key] = reading
        self.reconciler.trigger(key)

    @staticmethod
    async def _get(session: aiohttp.ClientSession, url: str) -> bytes:
        async with session.get(url, allow_redirects=False) as response:
            if response.status != 200:
                raise UnreadableProgressError(f"HTTP status {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(16 * 1024):
                body += chunk
                if len(body) > MAX_BODY:
                    raise UnreadableProgressError(f"the body is over {MAX_BODY} bytes")
            return bytes(body)

    def _tell(self, key: Key, url: str, exc: UnreadableProgressError) -> None:
        if key in self.told:
            return
        self.told.add(key)
        log.warning(
            "psjob %s/%s: ignoring the progress at %s, which is not the runtime's: %s "
            "(said once per job)",
            *key,
            url,
            exc,
        )
