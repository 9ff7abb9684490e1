"""The contract reader: a wrong environment stops the process at once, naming the variable."""

import json
import os
import subprocess
import sys

import pytest
from psjob_runtime.contract import Role, read_context
from psjob_runtime.errors import ContractError, ExitCode


def valid_env() -> dict[str, str]:
    return {
        "PSJOB_NAME": "demo",
        "PSJOB_NAMESPACE": "team-a",
        "PSJOB_ROLE": "worker",
        "PSJOB_REPLICA_INDEX": "1",
        "PSJOB_NUM_SERVERS": "2",
        "PSJOB_NUM_WORKERS": "3",
        "PSJOB_SERVER_ADDRS": "demo-server-0.demo-server.team-a.svc:23456,"
        "demo-server-1.demo-server.team-a.svc:23456",
        "MASTER_ADDR": "demo-server-0.demo-server.team-a.svc",
        "MASTER_PORT": "23456",
        "WORLD_SIZE": "5",
        "RANK": "3",
        "PSJOB_TRAINING": json.dumps(
            {
                "mode": "ssp",
                "staleness": 2,
                "optimizer": {"name": "adam", "lr": 0.001, "weightDecay": 0.0001},
                "checkpoint": None,
                "timeoutSeconds": 120,
                "config": {"epochs": 3},
            }
        ),
        "PSJOB_RESTART_COUNT": "2",
        "PSJOB_SECRET": "0123456789abcdef" * 4,
    }


def test_reads_a_valid_environment() -> None:
    ctx = read_context(valid_env())
    assert ctx.role is Role.WORKER
    assert (ctx.replica_index, ctx.rank, ctx.world_size) == (1, 3, 5)
    assert str(ctx.server_addrs[1]) == "demo-server-1.demo-server.team-a.svc:23456"
    assert ctx.training.staleness == 2
    assert ctx.training.optimizer.weight_decay == 0.0001
    assert ctx.training.config == {"epochs": 3}
    assert ctx.restart_count == 2
    assert ctx.secret == b"0123456789abcdef" * 4
    assert "0123456789abcdef" not in repr(ctx)  # never in a log line that prints the context
    assert ctx.describe_rank(0) == "server 0 (rank 0)"
    assert ctx.describe_rank(4) == "worker 2 (rank 4)"


@pytest.mark.parametrize("name", sorted(valid_env()))
def test_a_missing_variable_is_named(name: str) -> None:
    env = valid_env()
    del env[name]
    with pytest.raises(ContractError, match=f"^{name} is not set"):
        read_context(env)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PSJOB_ROLE", "ps", "expected 'server' or 'worker'"),
        ("PSJOB_NUM_WORKERS", "three", "is not an integer"),
        ("PSJOB_REPLICA_INDEX", "3", "out of range: there are 3 workers"),
        ("PSJOB_SERVER_ADDRS", "a:1", "lists 1 addresses but PSJOB_NUM_SERVERS=2"),
        ("PSJOB_SERVER_ADDRS", "a:1,b:http", "expected host:port"),
        ("PSJOB_SERVER_ADDRS", "s-{index}:1,b:2", "a pattern with {index} stands alone"),
        ("WORLD_SIZE", "4", "expected them to agree"),
        ("RANK", "1", "worker 1 must have rank 3"),
        ("PSJOB_TRAINING", "{not json", "PSJOB_TRAINING is malformed"),
        ("PSJOB_TRAINING", '{"mode": "ssp"}', "mode ssp needs staleness"),
        ("PSJOB_TRAINING", '{"optimizer": {"lr": -1}}', "optimizer.lr"),
        ("PSJOB_TRAINING", '{"mode": "sync", "stalenes": 1}', "stalenes"),
        ("PSJOB_SECRET", "short", "at least 32 characters"),
        ("MASTER_PORT", "70000", "MASTER_PORT=70000 is above 65535"),
        ("MASTER_PORT", "0", "MASTER_PORT=0 is below 1"),
        ("PSJOB_SERVER_ADDRS", "a:1,b:70000", "with a port in 1..65535"),
        ("PSJOB_TRAINING", '{"optimizer": {"lr": 1e400}}', "finite number"),
        ("PSJOB_TRAINING", '{"optimizer": {"lr": NaN}}', "finite number"),
        ("PSJOB_TRAINING", '{"checkpoint": {"dir": "../../etc"}}', "absolute, normalised path"),
        ("PSJOB_PROGRESS_PORT", "70000", "PSJOB_PROGRESS_PORT=70000 is above 65535"),
        ("PSJOB_PROGRESS_PORT", "-1", "PSJOB_PROGRESS_PORT=-1 is below 0"),
        ("PSJOB_PROGRESS_PORT", "http", "PSJOB_PROGRESS_PORT='http' is not an integer"),
    ],
)
def test_a_malformed_variable_is_named(name: str, value: str, message: str) -> None:
    env = valid_env()
    env[name] = value
    with pytest.raises(ContractError, match=name) as raised:
        read_context(env)
    assert message in str(raised.value)


@pytest.mark.parametrize(("value", "port"), [(None, 0), ("", 0), ("0", 0), ("9400", 9400)])
def test_the_progress_port_is_optional_and_0_means_none(value: str | None, port: int) -> None:
    env = valid_env()
    env.pop("PSJOB_PROGRESS_PORT", None)
    if value is not None:
        env["PSJOB_PROGRESS_PORT"] = value
    assert read_context(env).progress_port == port


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MASTER_ADDR", "attacker.example"),
        ("MASTER_PORT", "23457"),
    ],
)
def test_a_rendezvous_other_than_server_0_is_refused_naming_both(name: str, value: str) -> None:
    env = valid_env()
    env[name] = value
    with pytest.raises(ContractError) as raised:
        read_context(env)
    assert str(raised.value).startswith("MASTER_ADDR:MASTER_PORT is ")
    assert "but PSJOB_SERVER_ADDRS starts with demo-server-0.demo-server.team-a.svc:23456" in str(
        raised.value
    )
    assert value in str(raised.value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PSJOB_NUM_WORKERS", "three", "PSJOB_NUM_WORKERS='three' is not an integer"),
        # a port out of range used to pass here and fail in the rendezvous: exit 75, retried
        ("MASTER_PORT", "70000", "MASTER_PORT=70000 is above 65535"),
        ("PSJOB_PROGRESS_PORT", "99999", "PSJOB_PROGRESS_PORT=99999 is above 65535"),
    ],
)
def test_the_server_command_exits_78_naming_the_variable(
    name: str, value: str, message: str
) -> None:
    env = {**os.environ, **valid_env(), "PSJOB_ROLE": "server", "PSJOB_REPLICA_INDEX": "0"}
    env.update({"RANK": "0", name: value})
    done = subprocess.run(
        [sys.executable, "-m", "psjob_runtime", "server"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == ExitCode.CONFIG_ERROR
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_server_address_pattern_stands_for_every_server() -> None:
    env = valid_env()
    env["PSJOB_SERVER_ADDRS"] = "demo-server-{index}.demo-server.team-a.svc:23456"
    ctx = read_context(env)
    assert [str(a) for a in ctx.server_addrs] == [
        "demo-server-0.demo-server.team-a.svc:23456",
        "demo-server-1.demo-server.team-a.svc:23456",
    ]
