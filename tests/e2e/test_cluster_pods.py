"""Pods bound to the agent's nodes run as local processes and report like a kubelet would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from kubernetes import client
from psjob_localcluster import LocalCluster
from psjob_localcluster.objects import create
from psjob_localcluster.podspecs import python_pod
from psjob_localcluster.procs import process_exists
from psjob_localcluster.waiting import wait_for, wait_for_deletion, wait_for_pod_phase


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    state = pod["status"]["containerStatuses"][0]["state"]
    assert "terminated" in state, state
    return dict(state["terminated"])


def test_successful_pod_ends_succeeded_with_exit_code_0(
    api_client: client.ApiClient, namespace: str
) -> None:
    create(api_client, namespace, python_pod("ok", "print('hello from a pod')"))
    core = client.CoreV1Api(api_client)
    pod = wait_for_pod_phase(core, namespace, "ok", {"Succeeded", "Failed"})
    assert pod["status"]["phase"] == "Succeeded"
    assert _terminated(pod)["exitCode"] == 0
    assert _terminated(pod)["reason"] == "Completed"
    assert pod["status"]["podIP"].startswith("127.")
    assert pod["spec"]["nodeName"] in {"node-0", "node-1"}


def test_failing_pod_reports_exit_code_and_last_log_line(
    api_client: client.ApiClient, namespace: str
) -> None:
    code = "import sys; print('step 1'); print('step 2: bad input'); sys.exit(3)"
    create(api_client, namespace, python_pod("bad", code))
    pod = wait_for_pod_phase(
        client.CoreV1Api(api_client), namespace, "bad", {"Succeeded", "Failed"}
    )
    assert pod["status"]["phase"] == "Failed"
    terminated = _terminated(pod)
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"
    assert terminated["message"].splitlines()[-1] == "step 2: bad input"


def test_environment_is_built_like_the_kubelet(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    create(
        api_client,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"mode": "sync"},
        },
    )
    create(
        api_client,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"token": "s3cret"},
        },
    )
    manifest = python_pod("env", "import json, os; print(json.dumps(dict(os.environ)))")
    container = manifest["spec"]["containers"][0]
    container["env"] = [
        {"name": "BASE", "value": "x"},
        {"name": "DERIVED", "value": "$(BASE)-y-$$(BASE)-$(MISSING)"},
        {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {
            "name": "MEM_MI",
            "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
        },
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
    ]
    container["resources"] = {"limits": {"memory": "256Mi", "cpu": "1"}}
    create(api_client, namespace, manifest)
    pod = wait_for_pod_phase(core, namespace, "env", {"Succeeded", "Failed"})
    assert pod["status"]["phase"] == "Succeeded"
    env = json.loads(core.read_namespaced_pod_log("env", namespace))
    assert env["DERIVED"] == "x-y-$(BASE)-$(MISSING)"
    assert env["MY_POD"] == "env"
    assert env["MY_IP"] == pod["status"]["podIP"]
    assert env["MY_NODE"] == pod["spec"]["nodeName"]
    assert env["MEM_MI"] == "256"
    assert env["MODE"] == "sync"
    assert env["TOKEN"] == "s3cret"
    assert env["HOSTNAME"] == "env"
    assert env["PATH"].split(":")[0] == os.path.dirname(sys.executable)


def test_deleting_a_running_pod_stops_its_process_within_the_grace_period(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(600)"
    create(api_client, namespace, python_pod("sleeper", code, grace_seconds=5))
    wait_for_pod_phase(core, namespace, "sleeper", {"Running"})
    pid = int(
        wait_for(
            lambda: core.read_namespaced_pod_log("sleeper", namespace).strip() or None,
            "the pod to print its pid",
        )
    )
    assert process_exists(pid)
    started = time.monotonic()
    core.delete_namespaced_pod("sleeper", namespace)
    wait_for_deletion(core, namespace, "sleeper", timeout=10)
    assert not process_exists(pid)
    assert time.monotonic() - started < 5


def test_sigterm_ignoring_pod_is_killed_after_the_grace_period(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    code = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print(os.getpid(), flush=True); time.sleep(600)"
    )
    create(api_client, namespace, python_pod("stubborn", code, grace_seconds=2))
    wait_for_pod_phase(core, namespace, "stubborn", {"Running"})
    pid = int(
        wait_for(
            lambda: core.read_namespaced_pod_log("stubborn", namespace).strip() or None,
            "the pod to print its pid",
        )
    )
    started = time.monotonic()
    core.delete_namespaced_pod("stubborn", namespace)
    wait_for_deletion(core, namespace, "stubborn", timeout=15)
    elapsed = time.monotonic() - started
    assert not process_exists(pid)
    assert 1.5 < elapsed < 10, elapsed


def test_kubectl_logs_of_a_finished_pod(
    cluster: LocalCluster, namespace: str, api_client: client.ApiClient
) -> None:
    create(api_client, namespace, python_pod("talker", "print('line one'); print('line two')"))
    wait_for_pod_phase(client.CoreV1Api(api_client), namespace, "talker", {"Succeeded"})
    out = cluster.kubectl("logs", "-n", namespace, "talker").stdout
    assert out.splitlines() == ["line one", "line two"]
    tail = cluster.kubectl("logs", "-n", namespace, "talker", "--tail=1").stdout
    assert tail.splitlines() == ["line two"]


def test_kubectl_logs_follow_streams_a_running_pod(
    cluster: LocalCluster, namespace: str, api_client: client.ApiClient
) -> None:
    code = (
        "import time\nfor i in range(10):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.5)"
    )
    create(api_client, namespace, python_pod("ticker", code))
    wait_for_pod_phase(client.CoreV1Api(api_client), namespace, "ticker", {"Running"})
    follow = subprocess.Popen(
        [
            str(cluster.tools.kubectl),
            f"--kubeconfig={cluster.kubeconfig}",
            "logs",
            "-f",
            "-n",
            namespace,
            "ticker",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert follow.stdout is not None
    first = follow.stdout.readline()
    assert first == "tick 0\n"
    assert follow.poll() is None  # still following while the pod runs
    rest, _ = follow.communicate(timeout=30)
    assert rest.splitlines() == [f"tick {i}" for i in range(1, 10)]
    assert follow.returncode == 0


def test_init_containers_run_to_completion_before_the_main_container(
    api_client: client.ApiClient, namespace: str
) -> None:
    manifest = python_pod("staged", "print(open('stage').read())")
    manifest["spec"]["initContainers"] = [
        {
            "name": f"init-{i}",
            "image": "python:3.11-slim",
            "command": ["python", "-c", f"open('stage', 'a').write('init-{i} ')"],
        }
        for i in range(2)
    ]
    create(api_client, namespace, manifest)
    core = client.CoreV1Api(api_client)
    pod = wait_for_pod_phase(core, namespace, "staged", {"Succeeded", "Failed"})
    assert pod["status"]["phase"] == "Succeeded"
    assert core.read_namespaced_pod_log("staged", namespace).strip() == "init-0 init-1"
    inits = pod["status"]["initContainerStatuses"]
    assert [s["state"]["terminated"]["exitCode"] for s in inits] == [0, 0]


def test_failing_init_container_fails_the_pod_without_running_main(
    api_client: client.ApiClient, namespace: str
) -> None:
    manifest = python_pod("blocked", "print('main ran')")
    manifest["spec"]["initContainers"] = [
        {"name": "check", "image": "python:3.11-slim", "command": ["python", "-c", "exit(4)"]}
    ]
    create(api_client, namespace, manifest)
    core = client.CoreV1Api(api_client)
    pod = wait_for_pod_phase(core, namespace, "blocked", {"Succeeded", "Failed"})
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 4
    assert "terminated" not in pod["status"]["containerStatuses"][0]["state"]


def test_on_failure_pod_restarts_after_the_kubelet_back_off(
    cluster: LocalCluster, api_client: client.ApiClient, namespace: str
) -> None:
    code = (
        "import os, sys\nfirst = not os.path.exists('ran')\nopen('ran', 'w').close()\n"
        "print('first run' if first else 'second run')\nsys.exit(1 if first else 0)"
    )
    create(api_client, namespace, python_pod("flaky", code, restart_policy="OnFailure"))
    core = client.CoreV1Api(api_client)
    pod = wait_for_pod_phase(core, namespace, "flaky", {"Succeeded", "Failed"}, timeout=60)
    assert pod["status"]["phase"] == "Succeeded"
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert cluster.kubectl("logs", "-n", namespace, "flaky").stdout.strip() == "second run"
    previous = cluster.kubectl("logs", "-n", namespace, "flaky", "--previous").stdout
    assert previous.strip() == "first run"
