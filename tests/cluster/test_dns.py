"""Pod hosts files carry the records CoreDNS would serve (no cluster needed)."""

from __future__ import annotations

from localcluster.agent.dns import ClusterRecords, PodIdentity, render_hosts

SLICE = {
    "metadata": {
        "name": "ps-abc",
        "namespace": "team",
        "labels": {"kubernetes.io/service-name": "job-server"},
    },
    "addressType": "IPv4",
    "endpoints": [
        {"addresses": ["127.5.0.2"], "hostname": "job-server-0", "conditions": {"ready": True}},
        {"addresses": ["127.5.0.3"], "hostname": "job-server-1", "conditions": {"ready": False}},
    ],
}


def _lines(text: str) -> set[str]:
    return set(text.splitlines())


def test_hosts_file_of_a_pod_in_the_same_namespace() -> None:
    records = ClusterRecords()
    assert records.set_slice(SLICE)
    me = PodIdentity("team", "job-worker-0", "job-worker", "127.5.0.9")
    lines = _lines(render_hosts(me, records.all()))
    for name in (
        "job-server-0.job-server.team.svc",
        "job-server-0.job-server.team.svc.cluster.local",
        "job-server.team.svc",
        "job-server",
        "job-server-0.job-server",
    ):
        assert f"127.5.0.2 {name}" in lines
        assert f"::ffff:127.5.0.2 {name}" in lines
    assert not any("127.5.0.3" in line for line in lines)  # not ready, not published
    assert "127.5.0.9 job-worker-0" in lines
    assert "127.5.0.9 job-worker-0.job-worker.team.svc.cluster.local" in lines


def test_other_namespaces_get_only_qualified_names() -> None:
    records = ClusterRecords()
    records.set_slice(SLICE)
    lines = _lines(render_hosts(PodIdentity("other", "p", None, "127.5.0.8"), records.all()))
    assert "127.5.0.2 job-server.team.svc" in lines
    assert "127.5.0.2 job-server" not in lines


def test_deleting_a_slice_removes_its_records() -> None:
    records = ClusterRecords()
    records.set_slice(SLICE)
    assert records.set_slice(SLICE, deleted=True)
    assert records.all() == []
    assert not records.set_slice(SLICE, deleted=True)
