"""The kubelet node itself, as a pod sees it: a real network, cluster DNS, and no way out.

Pods run in the runtime image (``python`` is there), on the CNI bridge, with the kubelet's
resolv.conf pointing at CoreDNS through kube-proxy's Service rules.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, TextIO

from kubernetes import client
from psjob_localcluster.controlplane import free_port
from psjob_localcluster.kubelet_cluster import KubeletCluster
from psjob_localcluster.node.network import NodeNetwork, routes_inside
from psjob_localcluster.objects import create, to_dict
from psjob_localcluster.waiting import wait_for

PROBE = """
import json, socket
def resolve(name):
    try:
        return sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET)})
    except OSError as error:
        return str(error)
def dial(address):
    try:
        socket.create_connection((address, 80), timeout=3).close()
        return "connected"
    except OSError as error:
        return type(error).__name__ + ": " + str(error)
print(json.dumps({
    "resolv": open("/etc/resolv.conf").read(),
    "names": {name: resolve(name) for name in NAMES},
    "outside": dial("192.0.2.1"),
}))
"""


def _pod(name: str, image: str, command: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "main", "image": image, "imagePullPolicy": "Never", "command": command}
            ],
            **spec,
        },
    }


def _phase(core: client.CoreV1Api, namespace: str, name: str) -> str:
    pod = to_dict(core.read_namespaced_pod(name, namespace))
    return str(pod["status"].get("phase"))


def test_no_route_leads_out_of_the_node(kubelet: KubeletCluster) -> None:
    routes = routes_inside(kubelet.node.sandbox)
    network = NodeNetwork()
    assert "default" not in routes, routes
    assert network.pod_cidr in routes and f"{network.host_address[:-1]}0/30" in routes, routes
    probe = subprocess.run(
        kubelet.node.sandbox.command(["ip", "route", "get", "192.0.2.1"]),
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0 and "unreachable" in probe.stderr, probe


def test_pods_find_services_and_each_other_through_cluster_dns(
    kubelet: KubeletCluster, kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    image = kubelet.images.runtime.reference
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "peers"},
        "spec": {"clusterIP": "None", "selector": {"app": "peer-0"},
                 "publishNotReadyAddresses": True},
    }  # fmt: skip
    create(kube, namespace, headless)
    create(kube, namespace, _pod("peer-0", image, ["sleep", "300"], hostname="peer-0",
                                 subdomain="peers"))  # fmt: skip
    wait_for(lambda: _phase(core, namespace, "peer-0") == "Running", "peer-0 running", 120)
    peer_ip = to_dict(core.read_namespaced_pod("peer-0", namespace))["status"]["podIP"]
    names = [
        f"peer-0.peers.{namespace}.svc.cluster.local",
        f"peer-0.peers.{namespace}.svc",
        "kubernetes.default",
        "example.com",
    ]
    code = f"NAMES = {names!r}\n{PROBE}"
    create(kube, namespace, _pod("probe", image, ["python", "-c", code]))
    wait_for(lambda: _phase(core, namespace, "probe") in ("Succeeded", "Failed"), "probe done", 120)
    assert _phase(core, namespace, "probe") == "Succeeded"
    seen = json.loads(core.read_namespaced_pod_log("probe", namespace).strip().splitlines()[-1])
    network = NodeNetwork()
    assert f"nameserver {network.dns_service_ip}" in seen["resolv"]
    assert seen["names"][names[0]] == [peer_ip]
    assert seen["names"][names[1]] == [peer_ip]
    assert seen["names"]["kubernetes.default"] == ["10.0.0.1"]
    assert isinstance(seen["names"]["example.com"], str), "a name outside the cluster resolved"
    assert "unreachable" in seen["outside"].lower(), seen["outside"]


def test_kubectl_exec_and_port_forward_reach_a_container_through_the_kubelet(
    kubelet: KubeletCluster, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(kube)
    serve = ["python", "-m", "http.server", "8080", "--directory", "/home/psjob"]
    create(kube, namespace, _pod("web", kubelet.images.runtime.reference, serve))
    wait_for(lambda: _phase(core, namespace, "web") == "Running", "web running", 120)
    made = kubelet.kubectl(
        "exec", "-n", namespace, "web", "--", "python", "-c",
        "import pathlib; pathlib.Path('/home/psjob/hello.txt').write_text('hello from exec')",
    )  # fmt: skip
    assert made.returncode == 0
    output = tmp_path / "port-forward.log"
    forwards: list[tuple[subprocess.Popen[str], int]] = []

    def start_forward(out: TextIO) -> None:
        port = free_port()
        process = subprocess.Popen(
            [str(kubelet.tools.kubectl), f"--kubeconfig={kubelet.kubeconfig}", "port-forward",
             "-n", namespace, "pod/web", f"{port}:8080"],
            stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        forwards.append((process, port))

    with output.open("w") as out:
        start_forward(out)
        try:

            def fetch() -> str | None:
                process, port = forwards[-1]
                if process.poll() is not None and len(forwards) < 3:
                    start_forward(out)  # kubectl port-forward ends on a stream error: run it again
                    return None
                try:
                    url = f"http://127.0.0.1:{port}/hello.txt"
                    with urllib.request.urlopen(url, timeout=2) as response:
                        return str(response.read().decode())
                except OSError:
                    return None

            try:
                fetched = wait_for(fetch, "the file through kubectl port-forward", 60)
            except TimeoutError as error:
                said = output.read_text()
                raise AssertionError(f"{error}; kubectl port-forward said:\n{said}") from None
            assert fetched == "hello from exec"
        finally:
            for process, _ in forwards:
                process.terminate()
                process.wait(timeout=10)
