"""The operator and the runtime each keep a copy of the environment contract: they must agree.

The runtime image does not install the operator, so neither side can import the other's names.
This renders real pods with the operator and reads their environment with the runtime.
"""

import json
from typing import Any

import pytest
from psjob_operator import contract as operator_contract
from psjob_operator.models import PSJob, ReplicaSpec, Role
from psjob_operator.models import training as operator_training
from psjob_operator.render import render_pod, render_pods, render_secret
from psjob_runtime import contract as runtime_contract
from psjob_runtime import training as runtime_training
from psjob_runtime.contract import read_context
from psjob_runtime.errors import ExitCode

JOB = PSJob.model_validate(
    {
        "apiVersion": "psjob.dev/v1alpha1",
        "kind": "PSJob",
        "metadata": {"name": "demo", "namespace": "team-a", "uid": "u"},
        "spec": {
            "image": "img",
            "servers": {"replicas": 2, "port": 4000},
            "workers": {"replicas": 3, "env": [{"name": "EXTRA", "value": "1"}]},
            "training": {
                "mode": "ssp",
                "staleness": 2,
                "optimizer": {"name": "adam", "lr": 0.001},
                "checkpoint": {"dir": "/ckpt"},
                "config": {"epochs": 3},
            },
        },
    }
)


TOKEN = "f" * 64


def value_of(variable: dict[str, Any], secret: dict[str, Any]) -> str:
    """A variable's value as the kubelet gives it, reading secretKeyRef from the job's Secret."""
    if "value" in variable:
        return str(variable["value"])
    ref = variable["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    return str(secret["stringData"][ref["key"]])


def contract_envs(attempt: int = 0) -> list[dict[str, str]]:
    """The contract variables of each pod's main container, servers first."""
    secret = render_secret(JOB, TOKEN)
    envs = []
    for pod in render_pods(JOB, attempt):
        (main,) = [c for c in pod["spec"]["containers"] if c["name"] == "psjob"]
        envs.append({e["name"]: value_of(e, secret) for e in main["env"] if e["name"] != "EXTRA"})
    return envs


def test_both_sides_name_the_same_variables() -> None:
    runtime_names = {
        value for name, value in vars(runtime_contract).items() if name.startswith("ENV_")
    }
    assert set(operator_contract.CONTRACT_ENV) == runtime_names
    for env in contract_envs():
        assert set(env) == runtime_names


def test_the_runtime_reads_every_rendered_pod_as_the_operator_meant_it() -> None:
    contexts = [read_context(env) for env in contract_envs(attempt=4)]
    assert [(c.role.value, c.replica_index) for c in contexts] == [
        ("server", 0),
        ("server", 1),
        ("worker", 0),
        ("worker", 1),
        ("worker", 2),
    ]
    for ctx in contexts:
        assert (ctx.job_name, ctx.namespace, ctx.restart_count) == ("demo", "team-a", 4)
        assert (ctx.num_servers, ctx.num_workers, ctx.world_size) == (2, 3, 5)
        assert str(ctx.master) == "demo-server-0.demo-server.team-a.svc:4000"
        assert ctx.training.staleness == 2 and ctx.training.config == {"epochs": 3}
        assert ctx.training.checkpoint is not None and ctx.training.checkpoint.dir == "/ckpt"
        assert ctx.secret == TOKEN.encode()


def test_both_sides_agree_on_the_rank_rule() -> None:
    """Servers take ranks 0..S-1 and workers S..S+W-1, on both sides of the contract."""
    contexts = [read_context(env) for env in contract_envs()]
    assert [c.rank for c in contexts] == list(range(5))
    for ctx in contexts:
        if ctx.role.value == Role.WORKER.value:
            assert ctx.rank == ctx.worker_rank(ctx.replica_index)
        assert ctx.describe_rank(ctx.rank).startswith(f"{ctx.role.value} {ctx.replica_index} ")


@pytest.mark.parametrize(
    ("code", "restarts"),
    [
        (ExitCode.RETRYABLE, True),
        (ExitCode.TERMINATED, True),
        (ExitCode.CONFIG_ERROR, False),
        (ExitCode.USER_ERROR, False),
    ],
)
def test_restart_policy_exit_code_restarts_what_the_runtime_calls_retryable(
    code: ExitCode, restarts: bool
) -> None:
    replicas = ReplicaSpec.model_validate({"restartPolicy": "ExitCode"})
    assert replicas.is_retryable(code) is restarts


def test_both_sides_refuse_the_same_checkpoint_dirs() -> None:
    """PSJOB_TRAINING is checked again by the runtime, with the operator's pattern and words."""
    assert runtime_training.CHECKPOINT_DIR_PATTERN == operator_training.CHECKPOINT_DIR_PATTERN
    assert runtime_training.CHECKPOINT_DIR_MESSAGE == operator_training.CHECKPOINT_DIR_MESSAGE


@pytest.mark.parametrize("servers", [64, 65, 10_000])
def test_a_job_with_many_servers_renders_small_pods_the_runtime_reads_in_full(servers: int) -> None:
    """Beyond 64 servers PSJOB_SERVER_ADDRS is one pattern: a pod of the schema's largest job
    was 590 KB (every server's address), 11.8 GB in etcd for its 20,000 pods."""
    job = JOB.model_copy(deep=True)
    job.spec.servers.replicas = servers
    secret = render_secret(job, TOKEN)
    worker = render_pod(job, Role.WORKER, 1)
    (main,) = [c for c in worker["spec"]["containers"] if c["name"] == "psjob"]
    ctx = read_context({e["name"]: value_of(e, secret) for e in main["env"]})
    assert len(ctx.server_addrs) == servers
    assert str(ctx.server_addrs[servers - 1]) == (
        f"demo-server-{servers - 1}.demo-server.team-a.svc:4000"
    )
    assert ctx.master == ctx.server_addrs[0]
    assert len(json.dumps(worker)) < 8_000
