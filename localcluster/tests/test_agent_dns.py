"""Pod hosts files carry the records CoreDNS would serve (no cluster needed)."""

from __future__ import annotations

from typing import Any

from psjob_localcluster.agent.dns import ClusterRecords, PodIdentity, render_hosts

HEADLESS: dict[str, Any] = {
    "metadata": {"name": "job-server", "namespace": "team"},
    "spec": {"clusterIP": "None", "selector": {"role": "server"}},
}


def _pod(name: str, address: str, ready: bool, **spec: Any) -> dict[str, Any]:
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    return {
        "metadata": {"name": name, "namespace": "team", "labels": {"role": "server"}},
        "spec": {"hostname": name, "subdomain": "job-server", **spec},
        "status": {"phase": "Running", "podIP": address, "conditions": [condition]},
    }


def _lines(records: ClusterRecords, me: PodIdentity) -> set[str]:
    return set(render_hosts(me, records.all()).splitlines())


def test_hosts_file_of_a_pod_in_the_same_namespace() -> None:
    records = ClusterRecords()
    records.set_service(HEADLESS)
    assert records.set_pod(_pod("job-server-0", "127.5.0.2", ready=True))
    assert not records.set_pod(_pod("job-server-1", "127.5.0.3", ready=False))
    lines = _lines(records, PodIdentity("team", "job-worker-0", "job-worker", "127.5.0.9"))
    names = [
        "job-server-0.job-server.team.svc",
        "job-server.team.svc",
        "job-server",
        "job-server-0.job-server.team.svc.cluster.local",
        "job-server-0.job-server",
    ]
    for name in names:
        assert f"127.5.0.2 {name}" in lines
        assert f"::ffff:127.5.0.2 {name}" in lines
    assert not any("127.5.0.3" in line for line in lines)  # not ready, not published
    assert "127.5.0.9 job-worker-0" in lines
    assert "127.5.0.9 job-worker-0.job-worker.team.svc.cluster.local" in lines


def test_publish_not_ready_addresses_lists_pods_before_they_are_ready() -> None:
    records = ClusterRecords()
    records.set_service(
        {**HEADLESS, "spec": {**HEADLESS["spec"], "publishNotReadyAddresses": True}}
    )
    assert records.set_pod(_pod("job-server-1", "127.5.0.3", ready=False))
    lines = _lines(records, PodIdentity("team", "w", None, "127.5.0.9"))
    assert "127.5.0.3 job-server-1.job-server.team.svc" in lines


def test_other_namespaces_get_only_qualified_names() -> None:
    records = ClusterRecords()
    records.set_service(HEADLESS)
    records.set_pod(_pod("job-server-0", "127.5.0.2", ready=True))
    lines = _lines(records, PodIdentity("other", "p", None, "127.5.0.8"))
    assert "127.5.0.2 job-server.team.svc" in lines
    assert "127.5.0.2 job-server" not in lines


def test_finished_or_deleted_pods_and_services_drop_their_records() -> None:
    records = ClusterRecords()
    records.set_service(HEADLESS)
    pod = _pod("job-server-0", "127.5.0.2", ready=True)
    records.set_pod(pod)
    assert records.set_pod({**pod, "status": {**pod["status"], "phase": "Succeeded"}})
    assert records.all() == []
    records.set_pod(pod)
    assert records.set_service(HEADLESS, deleted=True)
    assert records.all() == []
