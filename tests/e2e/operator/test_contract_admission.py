"""The environment contract and the pod policy on the real control plane: the API server refuses a
template that would set a contract variable, with the models' message, and a restricted operator
fails a job whose template reaches the node instead of creating its pods."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from psjob_localcluster import LocalCluster
from psjob_operator.models import contract_env

from tests.e2e.operator.support import (
    GROUP,
    PLURAL,
    VERSION,
    Manifest,
    OperatorProcess,
    PSJobs,
    job_manifest,
)

pytestmark = pytest.mark.cluster

REFUSAL = contract_env.refusal(contract_env.TEMPLATE_ENV)


def template_setting(variable: str) -> Manifest:
    return job_manifest(
        "takeover",
        workers={
            "template": {
                "spec": {
                    "containers": [
                        {"name": "sidecar", "image": "busybox", "env": [{"name": "RANK"}]},
                        {"name": "psjob", "env": [{"name": variable, "value": "evil"}]},
                    ]
                }
            }
        },
    )


@pytest.mark.parametrize("variable", ["RANK", "PSJOB_ROLE", "MASTER_ADDR"])
def test_kubectl_apply_of_a_template_setting_a_contract_variable_is_refused(
    variable: str, cluster: LocalCluster, psjob_crd: None, psjobs: PSJobs
) -> None:
    done = cluster.kubectl(
        "apply",
        "-n",
        psjobs.namespace,
        "-f",
        "-",
        input_text=yaml.safe_dump(template_setting(variable)),
        check=False,
    )
    assert done.returncode != 0, done.stdout
    assert "spec.workers.template.spec.containers[1].env" in done.stderr
    assert REFUSAL in done.stderr  # word for word what `psjob validate` says
    assert psjobs.list_jobs() == []


def test_a_create_through_the_api_is_refused_as_well(
    cluster: LocalCluster, psjob_crd: None, psjobs: PSJobs
) -> None:
    with pytest.raises(ApiException) as refused:
        psjobs.custom.create_namespaced_custom_object(
            GROUP, VERSION, psjobs.namespace, PLURAL, template_setting("PSJOB_SECRET")
        )
    assert refused.value.status == 422
    assert REFUSAL in str(refused.value.body)
    assert psjobs.list_jobs() == []


def test_kubectl_cannot_send_an_infinite_learning_rate(
    cluster: LocalCluster, psjob_crd: None, psjobs: PSJobs
) -> None:
    """JSON has no Infinity: kubectl refuses YAML's .inf before anything reaches the server."""
    manifest = yaml.safe_dump(job_manifest("infinite")).replace(
        "spec:\n", "spec:\n  training:\n    optimizer:\n      lr: .inf\n", 1
    )
    done = cluster.kubectl(
        "apply", "-n", psjobs.namespace, "-f", "-", input_text=manifest, check=False
    )
    assert done.returncode != 0
    assert "unsupported value: +Inf" in done.stderr
    assert psjobs.list_jobs() == []


def test_a_restricted_operator_fails_a_host_level_job_naming_the_field(
    start_operator: Callable[..., OperatorProcess], psjobs: PSJobs
) -> None:
    start_operator("--pod-policy=restricted")
    psjobs.apply(job_manifest("hostile", workers={"template": {"spec": {"hostNetwork": True}}}))
    psjobs.wait_phase("hostile", "Failed", timeout=60)
    failed = psjobs.condition("hostile", "Failed")
    assert failed is not None and failed["reason"] == "ForbiddenPodTemplate"
    assert "spec.workers.template.spec.hostNetwork: shares the node's network" in failed["message"]
    assert psjobs.pods("hostile") == []


def test_a_pod_refused_by_pod_security_fails_the_job_instead_of_retrying(
    operator: OperatorProcess, psjobs: PSJobs
) -> None:
    # Pod Security Admission answers 403, not 422: without a rule for it the job stayed Pending
    # with no reason while the operator retried forever.
    label = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}
    psjobs.core.patch_namespace(psjobs.namespace, label)
    psjobs.apply(job_manifest("host", workers={"template": {"spec": {"hostNetwork": True}}}))
    psjobs.wait_phase("host", "Failed", timeout=60)
    failed = psjobs.condition("host", "Failed")
    assert failed is not None and failed["reason"] == "InvalidPodTemplate"
    assert 'violates PodSecurity "baseline:latest"' in failed["message"]
    assert "hostNetwork" in failed["message"]
    psjobs.wait_no_pods("host", timeout=30)  # the servers created before the refusal go too
