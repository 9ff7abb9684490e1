"""Each job's pods share a secret of their own: made by the operator, gone with the job."""

from __future__ import annotations

import base64

import pytest

from tests.e2e.operator.support import (
    SLEEP_FOREVER,
    OperatorProcess,
    PSJobs,
    eventually,
    job_manifest,
    raw,
)

pytestmark = pytest.mark.cluster


def token_of(psjobs: PSJobs, job: str) -> str:
    secret = raw(psjobs.core.read_namespaced_secret, f"{job}-psjob-auth", psjobs.namespace)
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("PSJob", job, True)
    assert owner["uid"] == psjobs.get(job)["metadata"]["uid"]
    return base64.b64decode(secret["data"]["secret"]).decode()


def test_every_pod_of_a_job_reads_its_own_secret_and_it_goes_with_the_job(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    for name in ("alpha", "beta"):
        psjobs.apply(job_manifest(name, workers={"replicas": 1, "command": SLEEP_FOREVER}))
    for name in ("alpha", "beta"):
        psjobs.wait_phase(name, "Running", timeout=60)
    tokens = {name: token_of(psjobs, name) for name in ("alpha", "beta")}
    assert tokens["alpha"] != tokens["beta"] and len(tokens["alpha"]) == 64
    for pod in psjobs.pods("alpha"):
        (variable,) = [
            e for e in pod["spec"]["containers"][0]["env"] if e["name"] == "PSJOB_SECRET"
        ]
        # The value stays in the Secret: `kubectl get pod -o yaml` shows only the reference.
        assert "value" not in variable
        assert variable["valueFrom"]["secretKeyRef"] == {
            "name": "alpha-psjob-auth",
            "key": "secret",
        }
    psjobs.delete("alpha")
    psjobs.wait_no_pods("alpha", timeout=60)
    eventually(
        lambda: (
            "alpha-psjob-auth"
            not in [
                s["metadata"]["name"]
                for s in raw(psjobs.core.list_namespaced_secret, psjobs.namespace)["items"]
            ]
        ),
        "alpha's Secret to be garbage-collected",
    )
    assert token_of(psjobs, "beta") == tokens["beta"]
