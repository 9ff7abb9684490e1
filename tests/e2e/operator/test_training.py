"""A real PSJob trains to Succeeded on the real control plane, driven by the operator."""

from __future__ import annotations

import pytest
import yaml

from tests.e2e.operator.support import ROOT, OperatorProcess, PSJobs

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_digits_example_trains_to_succeeded(operator: OperatorProcess, psjobs: PSJobs) -> None:
    psjobs.cluster.kubectl(
        "apply", "-n", psjobs.namespace, "-f", str(ROOT / "examples/digits.yaml")
    )
    psjobs.cluster.kubectl(
        "wait",
        "-n",
        psjobs.namespace,
        "--for=condition=Succeeded",
        "psjob/digits",
        "--timeout=300s",
        timeout=320,
    )
    status = psjobs.status("digits")
    assert status["workers"]["succeeded"] == 2
    servers = [r for r in status["replicas"] if r["role"] == "server"]
    assert len(servers) == 2
    assert all(r["phase"] in ("Succeeded", "Stopped") for r in servers)
    assert status["servers"]["failed"] == 0
    log = psjobs.cluster.kubectl("logs", "-n", psjobs.namespace, "digits-worker-0").stdout
    accuracy = [line for line in log.splitlines() if "accuracy" in line.lower()]
    assert accuracy, log[-2000:]
    manifest = yaml.safe_load((ROOT / "examples/digits.yaml").read_text())
    assert manifest["metadata"]["name"] == "digits"
