"""The progress poller against real HTTP endpoints on loopback: good, slow, huge and garbage."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from psjob_operator.controller import Key, Reconciler
from psjob_operator.kube import Kube
from psjob_operator.models import PSJob, Role
from psjob_operator.progress_reader import ProgressReader

from tests.support.pod_views import pod_view
from tests.unit.test_progress_status import body

JOB = PSJob.model_validate(
    {
        "apiVersion": "psjob.dev/v1alpha1",
        "kind": "PSJob",
        "metadata": {"name": "j"},
        "spec": {"image": "i"},
    }
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Recorder(Reconciler):
    """The reconciler, with each triggered reconcile recorded instead of run."""

    def __init__(self) -> None:
        super().__init__(cast(Kube, None))
        self.triggered: list[Key] = []

    def trigger(self, key: Key) -> None:
        self.triggered.append(key)


@asynccontextmanager
async def endpoint(handler: Handler) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/progress", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def serving(answer: dict[str, Any]) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response(answer)

    return handle


async def never_answers(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(30)
    return web.Response(text="{}")


async def endless_body(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(1024):
        await response.write(b"[" * 1024)
    return response


async def garbage(request: web.Request) -> web.StreamResponse:
    return web.Response(text="<html>welcome to nginx</html>")


def running(reconciler: Reconciler, ports: dict[Key, int]) -> None:
    """Jobs that run, each with a server 0 on loopback at its port."""
    reconciler.phases = {key: "Running" for key in ports}
    reconciler.pods = {
        key: [pod_view(JOB, Role.SERVER, 0, ip="127.0.0.1", progress_port=port)]
        for key, port in ports.items()
    }


async def one_round(reader: ProgressReader) -> None:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        await reader.read_all(session)


def test_a_changed_reading_triggers_the_jobs_reconcile_once() -> None:
    async def scenario() -> None:
        reconciler = Recorder()
        answer = body()
        async with endpoint(serving(answer)) as port:
            running(reconciler, {("ns", "a"): port})
            reader = ProgressReader(reconciler)
            await one_round(reader)
            assert reconciler.readings[("ns", "a")].body.step == 120
            await one_round(reader)  # the same values: nothing to write
            assert reconciler.triggered == [("ns", "a")]
            answer["step"] = 121
            await one_round(reader)
            assert reconciler.triggered == [("ns", "a"), ("ns", "a")]
            assert reconciler.readings[("ns", "a")].body.step == 121

    asyncio.run(scenario())


def test_an_endpoint_that_never_answers_costs_one_timeout_and_holds_no_other_job() -> None:
    async def scenario() -> float:
        reconciler = Recorder()
        async with endpoint(serving(body())) as good, endpoint(never_answers) as slow:
            running(reconciler, {("ns", "good"): good, ("ns", "slow"): slow})
            reader = ProgressReader(reconciler, timeout=0.5)
            started = time.monotonic()
            await one_round(reader)
            elapsed = time.monotonic() - started
        assert set(reconciler.readings) == {("ns", "good")}
        return elapsed

    assert asyncio.run(scenario()) < 2.0


@pytest.mark.parametrize("handler", [endless_body, garbage, serving({"step": "many"})])
def test_a_hostile_endpoint_is_ignored_and_logged_once(
    handler: Handler, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        reconciler = Recorder()
        async with endpoint(handler) as port:
            running(reconciler, {("ns", "bad"): port})
            reader = ProgressReader(reconciler)
            for _ in range(3):
                await one_round(reader)
        assert reconciler.readings == {} and reconciler.triggered == []

    with caplog.at_level(logging.WARNING, logger="psjob.operator.progress"):
        asyncio.run(scenario())
    assert len(caplog.records) == 1
    assert "ns/bad" in caplog.records[0].getMessage()


def test_a_job_that_stops_running_is_forgotten() -> None:
    async def scenario() -> None:
        reconciler = Recorder()
        async with endpoint(serving(body())) as port:
            running(reconciler, {("ns", "a"): port})
            reader = ProgressReader(reconciler)
            await one_round(reader)
            assert ("ns", "a") in reconciler.readings
            reconciler.phases[("ns", "a")] = "Succeeded"
            await one_round(reader)
            assert reconciler.readings == {}

    asyncio.run(scenario())


def test_a_server_without_an_ip_or_port_is_not_read() -> None:
    reconciler = Recorder()
    reconciler.phases = {("ns", "a"): "Running"}
    reconciler.pods = {("ns", "a"): [pod_view(JOB, Role.SERVER, 0, ip=None, progress_port=9400)]}
    asyncio.run(one_round(ProgressReader(reconciler)))
    assert reconciler.readings == {}


def test_a_body_before_any_report_is_no_progress() -> None:
    # A short job read only while its workers still import torch would end showing step 0.
    async def scenario() -> None:
        reconciler = Recorder()
        answer = body(step=0, samples=0, samplesPerSecond=0.0, loss=None, checkpoint=None)
        async with endpoint(serving(answer)) as port:
            running(reconciler, {("ns", "a"): port})
            reader = ProgressReader(reconciler)
            await one_round(reader)
            assert reconciler.readings == {} and reconciler.triggered == []
            answer.update(step=3, samples=96)
            await one_round(reader)
            assert reconciler.readings[("ns", "a")].body.step == 3

    asyncio.run(scenario())
