"""The job's NetworkPolicy: what it lets in, when there is none, and the operator's peers flag."""

import json
from typing import Any

import pytest
from psjob_operator.cli import build_parser
from psjob_operator.crd import crd
from psjob_operator.isolation import PeersError, parse_peers
from psjob_operator.models import Role
from psjob_operator.render import render_network_policy, render_pod
from psjob_operator.validation import InvalidManifestsError, load_psjobs

from tests.unit.psjobs import make_job

MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
OPERATOR = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "psjob-system"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "psjob-operator"}},
}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


def test_the_policy_selects_every_pod_of_the_job_and_lets_in_only_them() -> None:
    job = make_job(servers={"replicas": 2}, workers={"replicas": 2})
    policy = render_network_policy(job, ())
    assert policy is not None
    assert policy["metadata"]["name"] == "j"
    assert policy["metadata"]["namespace"] == "ns"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "u"
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    (own,) = spec["ingress"]
    assert "ports" not in own
    (peer,) = own["from"]
    for role in Role:
        labels = render_pod(job, role, 1)["metadata"]["labels"]
        assert _selects(spec["podSelector"], labels)
        assert _selects(peer["podSelector"], labels)
    labels = render_pod(make_job(), Role.SERVER, 0)["metadata"]["labels"]
    other = {**labels, "psjob.dev/job-name": "another"}
    assert not _selects(spec["podSelector"], other)
    assert not _selects(peer["podSelector"], other)


def test_the_peers_reach_only_the_progress_port() -> None:
    policy = render_network_policy(make_job(), (OPERATOR, MONITORING))
    assert policy is not None
    _, progress = policy["spec"]["ingress"]
    assert progress == {
        "from": [OPERATOR, MONITORING],
        "ports": [{"protocol": "TCP", "port": "progress"}],
    }
    ports = render_pod(make_job(), Role.SERVER, 0)["spec"]["containers"][0]["ports"]
    assert "progress" in {port["name"] for port in ports}


def test_a_job_that_turns_it_off_gets_none() -> None:
    assert render_network_policy(make_job(networkPolicy={"enabled": False}), ()) is None
    assert make_job().spec.network_policy.enabled is True


def test_psjob_validate_refuses_a_misspelt_switch() -> None:
    manifest = {
        "apiVersion": "psjob.dev/v1alpha1",
        "kind": "PSJob",
        "metadata": {"name": "j"},
        "spec": {"image": "i", "networkPolicy": {"enable": False}},
    }
    with pytest.raises(InvalidManifestsError, match=r"spec\.networkPolicy\.enable"):
        load_psjobs(json.dumps(manifest), "job.yaml")


def test_the_peers_flag_takes_networkpolicy_peers_as_the_api_server_writes_them() -> None:
    text = json.dumps([OPERATOR, {"ipBlock": {"cidr": "10.250.0.1/32", "except": []}}])
    assert parse_peers(text) == (OPERATOR, {"ipBlock": {"cidr": "10.250.0.1/32"}})
    args = build_parser().parse_args(
        ["operator", "--network-policy-peers", json.dumps([MONITORING])]
    )
    assert args.network_policy_peers == (MONITORING,)
    assert args.network_policy == "on"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"podSelector": {}}', ""),
        ('[{"podSelectr": {}}]', "0.podSelectr"),
        ('[{"ipBlock": {"cidr": "10.0.0.0/33"}}]', "0.ipBlock.cidr"),
        ('[{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}]', "operator"),
        ("not json", ""),
    ],
)
def test_a_bad_peers_flag_is_refused_naming_where(text: str, where: str) -> None:
    with pytest.raises(PeersError, match="NetworkPolicyPeers") as refused:
        parse_peers(text)
    assert where in str(refused.value)


def test_the_operator_refuses_a_bad_peers_flag_at_start(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator", "--network-policy-peers", "[1]"])
    assert (
        "--network-policy-peers: not a JSON list of NetworkPolicyPeers" in capsys.readouterr().err
    )


def test_the_crd_carries_the_switch_and_its_rule() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    assert spec["properties"]["networkPolicy"]["properties"]["enabled"]["default"] is True
    rules = [rule["fieldPath"] for rule in spec["x-kubernetes-validations"]]
    assert ".networkPolicy.enabled" in rules
