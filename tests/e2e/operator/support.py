"""Helpers for the operator's e2e tests: PSJobs as a user handles them, small manifests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from psjob_localcluster.cluster import RunningCluster
from psjob_localcluster.controlplane import free_port as free_port  # re-exported for the tests
from psjob_localcluster.procs import ManagedProcess
from psjob_localcluster.waiting import wait_for

ROOT = Path(__file__).resolve().parents[3]
GROUP, VERSION, PLURAL = "psjob.dev", "v1alpha1", "psjobs"

Manifest = dict[str, Any]


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:  # refused, reset or timed out: not up yet
        return False


@dataclass
class OperatorProcess:
    process: ManagedProcess
    http_port: int

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics") as response:
            text: str = response.read().decode()
            return text


def raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """An API call's JSON as plain data (camelCase keys), as `kubectl get -o json` shows it."""
    return json.loads(call(*args, **kwargs, _preload_content=False).data)


@dataclass
class PSJobs:
    """Apply, read and wait for PSJobs in the test's namespace, as a user would."""

    cluster: RunningCluster
    namespace: str
    api: client.ApiClient

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def list_jobs(self) -> list[Manifest]:
        listed = raw(
            self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL
        )
        jobs: list[Manifest] = listed["items"]
        return jobs

    def apply(self, manifest: Manifest) -> None:
        self.cluster.kubectl(
            "apply", "-n", self.namespace, "-f", "-", input_text=yaml.safe_dump(manifest)
        )

    def kubectl_wait(self, name: str, condition: str, timeout: int) -> None:
        """`kubectl wait --for=condition=...`, as a user waits for a job."""
        self.cluster.kubectl(
            "wait",
            "-n",
            self.namespace,
            f"--for=condition={condition}",
            f"psjob/{name}",
            f"--timeout={timeout}s",
            timeout=timeout + 20,
        )

    def logs(self, pod: str) -> str:
        """`kubectl logs` of a pod, through the node agent's log endpoint."""
        return self.cluster.kubectl("logs", "-n", self.namespace, pod).stdout

    def get(self, name: str) -> Manifest:
        job: Manifest = raw(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, name
        )
        return job

    def status(self, name: str) -> Manifest:
        status: Manifest = self.get(name).get("status", {})
        return status

    def condition(self, name: str, kind: str) -> Manifest | None:
        return next((c for c in self.status(name).get("conditions", []) if c["type"] == kind), None)

    def wait_phase(self, name: str, phase: str, timeout: float = 120.0) -> Manifest:
        last: list[Any] = [None]

        def probe() -> Manifest | None:
            status = self.status(name)
            last[0] = status.get("phase")
            return status if last[0] == phase else None

        try:
            return wait_for(probe, f"psjob {name} to be {phase}", timeout=timeout, interval=0.3)
        except TimeoutError as error:
            raise TimeoutError(
                f"{error}; it is {last[0]}: {json.dumps(self.status(name), indent=1)}"
            ) from None

    def pods(self, name: str) -> list[Manifest]:
        """The job's pods as plain manifests (camelCase keys), as `kubectl get -o json` shows."""
        listed = raw(
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=f"psjob.dev/job-name={name}",
        )
        pods: list[Manifest] = listed["items"]
        return pods

    def uids(self, name: str) -> dict[str, str]:
        """Each pod of job `name` by name: its uid, which a recreated pod does not keep."""
        return {p["metadata"]["name"]: p["metadata"]["uid"] for p in self.pods(name)}

    def reports_progress(self, pod: str) -> bool:
        """Whether a worker's log shows a progress line (no log yet before the pod starts)."""
        shown = self.cluster.kubectl("logs", "-n", self.namespace, pod, check=False)
        return shown.returncode == 0 and "progress worker" in shown.stdout

    def pod_env(self, pod: Manifest) -> dict[str, str]:
        return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]}

    def events(self, name: str | None = None) -> list[Manifest]:
        """Events on PSJob `name` (on every PSJob of the namespace when None)."""
        events: list[Manifest] = raw(self.core.list_namespaced_event, self.namespace)["items"]
        return [
            e
            for e in events
            if e["involvedObject"].get("kind") == "PSJob"
            and (name is None or e["involvedObject"]["name"] == name)
        ]

    def events_once(self, name: str, *reasons: str, timeout: float = 30.0) -> list[Manifest]:
        """Events on PSJob `name` once each of `reasons` is among them (as often as it is
        listed). The operator posts a look's events after it writes its status, so a test that
        saw the status must wait for them."""
        wanted = Counter(reasons)

        def posted() -> list[Manifest] | None:
            events = self.events(name)
            seen = Counter(e["reason"] for e in events)
            return events if all(seen[r] >= n for r, n in wanted.items()) else None

        found: list[Manifest] = wait_for(posted, f"events {sorted(reasons)} on {name}", timeout)
        return found

    def wait_no_pods(self, name: str, timeout: float = 60.0) -> None:
        wait_for(lambda: not self.pods(name), f"the pods of {name} to be gone", timeout=timeout)

    def wait_no_pods_of_role(self, name: str, role: str, timeout: float = 60.0) -> None:
        wait_for(
            lambda: (
                not [
                    p for p in self.pods(name) if p["metadata"]["labels"]["psjob.dev/role"] == role
                ]
            ),
            f"the {role} pods of {name} to be gone",
            timeout=timeout,
        )

    def patch_spec(self, name: str, spec: Manifest) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def missing(self, name: str) -> bool:
        try:
            self.get(name)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    def delete(self, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException as error:
            if error.status != 404:
                raise


def python_command(code: str) -> list[str]:
    """A container command that runs a line of Python (the node agent runs it in the venv)."""
    return ["python", "-c", code]


SLEEP_FOREVER = python_command("import time; time.sleep(3600)")


def job_manifest(name: str, **spec: Any) -> Manifest:
    """A PSJob whose pods run tiny Python commands: lifecycle tests need no training."""
    base: Manifest = {
        "image": "psjob/runtime:test",
        "servers": {"replicas": 1, "command": SLEEP_FOREVER},
        "workers": {"replicas": 2, "command": python_command("print('done')")},
    }
    for key, value in spec.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PSJob",
        "metadata": {"name": name},
        "spec": base,
    }


def eventually(probe: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    return wait_for(probe, what, timeout=timeout, interval=0.3)
