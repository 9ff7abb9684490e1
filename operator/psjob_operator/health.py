"""The operator's HTTP endpoint: /healthz for probes, /metrics for Prometheus."""

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from psjob_operator.metrics import REGISTRY


async def _healthz(request: web.Request) -> web.Response:
    # Answering at all proves the event loop runs; kopf's own failures end the process.
    return web.Response(text="ok\n")


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def serve(port: int, host: str = "0.0.0.0") -> web.AppRunner:
    app = web.Application()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _healthz)
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
