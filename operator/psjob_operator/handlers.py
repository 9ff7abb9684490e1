"""kopf handlers: they only feed the reconciler; all decisions live in `plan`.

No handler here needs a finalizer (event and index handlers take none), so deleting a PSJob
while the operator is down still works: the garbage collector removes the children through
their ownerReferences. `kopf run -m psjob_operator.handlers` runs these handlers too.
"""

import asyncio
import contextlib
import copy
import functools
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from psjob_operator import contract
from psjob_operator.controller import Reconciler
from psjob_operator.isolation import NetworkIsolation
from psjob_operator.kube import Kube
from psjob_operator.observe import PodView, pod_view
from psjob_operator.pod_policy import PodPolicy
from psjob_operator.progress_reader import DEFAULT_INTERVAL_SECONDS, ProgressReader
from psjob_operator.queueing import KueueApi, Queueing

API_CONNECTIONS = 32
"""Parallel API requests when creating or deleting a big job's pods."""


def api_client() -> client.ApiClient:
    """In a pod: its ServiceAccount; elsewhere: the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = API_CONNECTIONS
    return client.ApiClient(configuration)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    # kopf keeps any progress of its own in annotations under our prefix, never in status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=contract.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=contract.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = 40  # logging.ERROR: the reconciler posts the events users read
    if "reconciler" not in memo:
        policy = memo.get("pod_policy", PodPolicy.UNRESTRICTED)  # set by runner.run
        api = api_client()
        kueue = None
        if memo.get("kueue", False):  # set by runner.run
            kueue = functools.partial(Queueing, KueueApi(api))
        isolation = NetworkIsolation(
            memo.get("network_policy", True), memo.get("network_peers", ())
        )  # set by runner.run
        memo["reconciler"] = Reconciler(Kube(api), API_CONNECTIONS, policy, kueue, isolation)
    interval = memo.get("progress_interval", DEFAULT_INTERVAL_SECONDS)  # set by runner.run
    if interval > 0 and "progress_reader" not in memo:
        reader = ProgressReader(memo["reconciler"], interval)
        memo["progress_reader"] = asyncio.create_task(reader.run(), name="psjob-progress")


@kopf.on.cleanup()
async def stop_reading_progress(memo: Any, **_: Any) -> None:
    task: asyncio.Task[None] | None = memo.get("progress_reader")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@kopf.index("pods", labels={contract.LABEL_MANAGED_BY: contract.MANAGER})
def psjob_pods(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[tuple[str | None, str], PodView] | None:
    """Every psjob pod, by (namespace, job name): the reconciler's view of the pods."""
    view = pod_view(dict(body))
    job_name = labels.get(contract.LABEL_JOB_NAME)
    if view is None or job_name is None:
        return None
    return {(namespace, job_name): view}


@kopf.on.event(contract.GROUP, contract.VERSION, contract.PLURAL)
async def psjob_changed(body: kopf.Body, type: str, memo: Any, **kwargs: Any) -> None:
    reconciler: Reconciler = memo["reconciler"]
    reconciler.pods = kwargs["psjob_pods"]
    reconciler.observe_job(copy.deepcopy(dict(body)), deleted=type == "DELETED")


@kopf.on.event("pods", labels={contract.LABEL_MANAGED_BY: contract.MANAGER})
async def pod_changed(labels: kopf.Labels, namespace: str | None, memo: Any, **kwargs: Any) -> None:
    reconciler: Reconciler = memo["reconciler"]
    reconciler.pods = kwargs["psjob_pods"]
    job_name = labels.get(contract.LABEL_JOB_NAME)
    if job_name is not None and namespace is not None:
        reconciler.trigger((namespace, job_name))
