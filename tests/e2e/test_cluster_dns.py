"""Pods find each other by cluster DNS names, as torch.distributed and gloo need."""

from __future__ import annotations

import textwrap

from kubernetes import client
from psjob_localcluster.objects import create
from psjob_localcluster.podspecs import headless_service, python_pod
from psjob_localcluster.waiting import wait_for_pod_phase

SERVER = textwrap.dedent("""
    import socket
    me = socket.gethostname()
    address = socket.gethostbyname(me)  # gloo's way to pick its listening address
    listener = socket.create_server((address, 7077))
    print(f"{me} listening on {address}", flush=True)
    connection, _ = listener.accept()
    connection.sendall(connection.recv(100).upper())
""")

CLIENT = textwrap.dedent("""
    import os, socket, time
    ns = os.environ["NS"]
    names = [f"ps-0.ps.{ns}.svc", f"ps-0.ps.{ns}.svc.cluster.local", f"ps.{ns}.svc", "ps-0.ps"]
    deadline = time.monotonic() + 30
    for name in names:  # with the IPv6 + V4MAPPED lookup torch's TCPStore does
        while True:  # the records appear once the endpoint slice lists the server
            try:
                mapped = socket.getaddrinfo(name, 7077, socket.AF_INET6, socket.SOCK_STREAM, 0,
                                            socket.AI_V4MAPPED)
                break
            except socket.gaierror:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        print(name, socket.gethostbyname(name), mapped[0][4][0], flush=True)
    while True:
        try:
            conn = socket.create_connection((f"ps-0.ps.{ns}.svc", 7077), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    conn.sendall(b"ping")
    print("reply", conn.recv(100).decode(), flush=True)
""")


def test_pods_behind_a_headless_service_reach_each_other_by_dns_name(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    create(api_client, namespace, headless_service("ps", {"app": "ps"}, 7077))
    server = python_pod("ps-0", SERVER, labels={"app": "ps"}, hostname="ps-0", subdomain="ps")
    create(api_client, namespace, server)
    create(api_client, namespace, python_pod("client", CLIENT, env={"NS": namespace}))
    client_pod = wait_for_pod_phase(core, namespace, "client", {"Succeeded", "Failed"})
    server_pod = wait_for_pod_phase(core, namespace, "ps-0", {"Succeeded", "Failed"})
    client_log = core.read_namespaced_pod_log("client", namespace)
    assert client_pod["status"]["phase"] == "Succeeded", client_log
    assert server_pod["status"]["phase"] == "Succeeded"
    server_ip = server_pod["status"]["podIP"]
    server_log = core.read_namespaced_pod_log("ps-0", namespace)
    assert server_log.strip() == f"ps-0 listening on {server_ip}"
    lines = client_log.splitlines()
    assert lines[-1] == "reply PING"
    assert len(lines) == 5
    for line in lines[:-1]:
        _, ipv4, mapped = line.split()
        assert (ipv4, mapped) == (server_ip, f"::ffff:{server_ip}")


WILDCARD_SERVER = textwrap.dedent("""
    import socket
    listener = socket.create_server(("", 7078))  # the wildcard, as torch's TCPStore binds
    print("bound", listener.getsockname()[0], flush=True)
    connection, _ = listener.accept()
    connection.sendall(socket.gethostname().encode())
""")

WILDCARD_CLIENT = textwrap.dedent("""
    import os, socket, time
    deadline = time.monotonic() + 30
    for name in ("one.port", "two.port"):
        while True:
            try:
                conn = socket.create_connection((name, 7078), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        print(conn.recv(100).decode(), flush=True)
""")


def test_two_pods_listen_on_the_same_port_as_on_a_real_node(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    create(api_client, namespace, headless_service("port", {"app": "port"}, 7078))
    for name in ("one", "two"):
        pod = python_pod(
            name, WILDCARD_SERVER, labels={"app": "port"}, hostname=name, subdomain="port"
        )
        create(api_client, namespace, pod)
    create(api_client, namespace, python_pod("client", WILDCARD_CLIENT))
    client_pod = wait_for_pod_phase(core, namespace, "client", {"Succeeded", "Failed"})
    assert client_pod["status"]["phase"] == "Succeeded", core.read_namespaced_pod_log(
        "client", namespace
    )
    assert core.read_namespaced_pod_log("client", namespace).split() == ["one", "two"]
    for name in ("one", "two"):
        server = wait_for_pod_phase(core, namespace, name, {"Succeeded", "Failed"})
        assert server["status"]["phase"] == "Succeeded"
        bound = core.read_namespaced_pod_log(name, namespace).strip()
        assert bound == f"bound {server['status']['podIP']}"
