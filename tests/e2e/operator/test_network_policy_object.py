"""Each job's NetworkPolicy as the API server holds it: created before the pods with the peers
the operator was started with, absent when the job or the operator turns it off, and fixed once
the job exists. Enforcement is tested on the kubelet node (tests/kubelet/test_isolation.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from tests.e2e.operator.support import (
    SLEEP_FOREVER,
    OperatorProcess,
    PSJobs,
    eventually,
    job_manifest,
    raw,
)

pytestmark = pytest.mark.cluster

SCRAPER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


def _policies(psjobs: PSJobs) -> dict[str, dict[str, Any]]:
    listed = raw(
        client.NetworkingV1Api(psjobs.api).list_namespaced_network_policy, psjobs.namespace
    )
    return {policy["metadata"]["name"]: policy for policy in listed["items"]}


def _sleeping(name: str, **spec: Any) -> dict[str, Any]:
    return job_manifest(name, workers={"replicas": 1, "command": SLEEP_FOREVER}, **spec)


def test_the_operator_gives_each_job_a_policy_it_owns_and_it_goes_with_the_job(
    start_operator: Callable[..., OperatorProcess], psjobs: PSJobs
) -> None:
    start_operator(f"--network-policy-peers={json.dumps([SCRAPER])}")
    psjobs.apply(_sleeping("isolated"))
    psjobs.apply(_sleeping("open", networkPolicy={"enabled": False}))
    for name in ("isolated", "open"):
        psjobs.wait_phase(name, "Running", timeout=60)
    policies = _policies(psjobs)
    assert list(policies) == ["isolated"]
    policy = policies["isolated"]
    (owner,) = policy["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("PSJob", psjobs.get("isolated")["metadata"]["uid"])
    selected = policy["spec"]["podSelector"]["matchLabels"]
    for pod in psjobs.pods("isolated"):
        assert selected.items() <= pod["metadata"]["labels"].items()
    own, scrapers = policy["spec"]["ingress"]
    assert own["from"] == [{"podSelector": {"matchLabels": selected}}]
    assert scrapers == {"from": [SCRAPER], "ports": [{"port": "progress", "protocol": "TCP"}]}

    psjobs.delete("isolated")
    eventually(lambda: "isolated" not in _policies(psjobs), "the policy to go with its job")


def test_an_operator_with_network_policy_off_creates_none(
    start_operator: Callable[..., OperatorProcess], psjobs: PSJobs
) -> None:
    start_operator("--network-policy=off")
    psjobs.apply(_sleeping("plain"))
    psjobs.wait_phase("plain", "Running", timeout=60)
    assert _policies(psjobs) == {}


def test_the_switch_is_fixed_once_the_job_exists(psjob_crd: None, psjobs: PSJobs) -> None:
    psjobs.apply(_sleeping("fixed"))
    with pytest.raises(ApiException) as refused:
        psjobs.patch_spec("fixed", {"networkPolicy": {"enabled": False}})
    assert refused.value.status == 422
    assert "spec.networkPolicy.enabled cannot change on an existing job" in str(refused.value.body)
    assert psjobs.get("fixed")["spec"]["networkPolicy"] == {"enabled": True}
