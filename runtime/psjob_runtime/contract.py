"""The environment contract (operator -> runtime), read once into a typed `JobContext`.

Every process of a job, in a pod or started by the local launcher, learns who it is only from
these variables. Reading them in one place means a wrong value stops the process at start-up
with the variable's name and the expected form, instead of surfacing later as a hang in the
rendezvous (exit code 78, permanent: a restart would read the same values).

The operator writes these variables from its own copy of their names (this package must not
import the operator); tests/unit/test_env_contract.py checks that the two copies agree.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import ValidationError

from psjob_runtime.errors import ContractError
from psjob_runtime.training import TrainingSettings

ENV_JOB_NAME = "PSJOB_NAME"
ENV_NAMESPACE = "PSJOB_NAMESPACE"
ENV_ROLE = "PSJOB_ROLE"
ENV_REPLICA_INDEX = "PSJOB_REPLICA_INDEX"
ENV_NUM_SERVERS = "PSJOB_NUM_SERVERS"
ENV_NUM_WORKERS = "PSJOB_NUM_WORKERS"
ENV_SERVER_ADDRS = "PSJOB_SERVER_ADDRS"
ENV_MASTER_ADDR = "MASTER_ADDR"
ENV_MASTER_PORT = "MASTER_PORT"
ENV_WORLD_SIZE = "WORLD_SIZE"
ENV_RANK = "RANK"
ENV_TRAINING = "PSJOB_TRAINING"
ENV_RESTART_COUNT = "PSJOB_RESTART_COUNT"
ENV_SECRET = "PSJOB_SECRET"
ENV_PROGRESS_PORT = "PSJOB_PROGRESS_PORT"

MIN_SECRET_LENGTH = 32
"""Characters of PSJOB_SECRET at least; the operator and the launcher generate 64 hex digits."""

MAX_PORT = 65535
MAX_WORKERS = 10000
"""Workers a job may have (spec.workers.replicas' bound): a server admits worker ranks up to
S + MAX_WORKERS - 1, since workers added by scaling up have indices its own count lacks."""


class Role(StrEnum):
    SERVER = "server"
    WORKER = "worker"


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class JobContext:
    """Who this process is within its job, and how the job trains."""

    job_name: str
    namespace: str
    role: Role
    replica_index: int
    num_servers: int
    num_workers: int
    server_addrs: tuple[Address, ...]
    master: Address
    world_size: int
    rank: int
    training: TrainingSettings
    restart_count: int
    secret: bytes = field(repr=False)
    """The job's shared secret (auth.py): every peer proves it holds it before it is served."""
    progress_port: int = 0
    """Where servers answer GET /progress and /metrics (progress_http.py); 0: nowhere."""

    def worker_rank(self, index: int) -> int:
        return self.num_servers + index

    def describe_rank(self, rank: int) -> str:
        """A peer's name as people see it in logs and pod names, e.g. `worker 1 (rank 3)`."""
        if rank < self.num_servers:
            return f"server {rank} (rank {rank})"
        return f"worker {rank - self.num_servers} (rank {rank})"


def _require(env: Mapping[str, str], name: str, expected: str) -> str:
    value = env.get(name)
    if value is None or value.strip() == "":
        raise ContractError(f"{name} is not set: expected {expected}")
    return value.strip()


def _int(
    env: Mapping[str, str], name: str, expected: str, minimum: int, maximum: int | None = None
) -> int:
    raw = _require(env, name, expected)
    try:
        value = int(raw)
    except ValueError:
        raise ContractError(f"{name}={raw!r} is not an integer: expected {expected}") from None
    if value < minimum:
        raise ContractError(f"{name}={value} is below {minimum}: expected {expected}")
    if maximum is not None and value > maximum:
        raise ContractError(f"{name}={value} is above {maximum}: expected {expected}")
    return value


def _progress_port(env: Mapping[str, str]) -> int:
    """Optional: absent or 0 means no HTTP endpoint (a pod of an older operator has none)."""
    if env.get(ENV_PROGRESS_PORT, "").strip() == "":
        return 0
    return _int(
        env, ENV_PROGRESS_PORT, f"the progress port, 1..{MAX_PORT}, or 0 for none", 0, MAX_PORT
    )


def _address(raw: str, name: str) -> Address:
    host, sep, port = raw.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= MAX_PORT:
        raise ContractError(f"{name} has {raw!r}: expected host:port with a port in 1..{MAX_PORT}")
    return Address(host, int(port))


def describe_validation_error(error: ValidationError, prefix: str = "") -> str:
    """`field.path: what is wrong` for every problem pydantic found, joined by `; `."""
    return "; ".join(
        f"{prefix}{'.'.join(str(part) for part in issue['loc']) or '(top level)'}: {issue['msg']}"
        for issue in error.errors()
    )


def _training(env: Mapping[str, str]) -> TrainingSettings:
    raw = _require(env, ENV_TRAINING, 'the JSON of spec.training, e.g. {"mode": "sync"}')
    try:
        return TrainingSettings.model_validate_json(raw)
    except ValidationError as error:
        raise ContractError(
            f"{ENV_TRAINING} is malformed: {describe_validation_error(error)}"
        ) from None


def _secret(env: Mapping[str, str]) -> bytes:
    expected = (
        f"the job's shared secret, at least {MIN_SECRET_LENGTH} characters (the operator sets it "
        "from the job's Secret <job>-psjob-auth; the local launcher generates one)"
    )
    value = _require(env, ENV_SECRET, expected)
    if len(value) < MIN_SECRET_LENGTH:
        raise ContractError(f"{ENV_SECRET} has {len(value)} characters: expected {expected}")
    return value.encode()


INDEX_PLACEHOLDER = "{index}"


def _server_list(raw: str, num_servers: int) -> list[str]:
    """The operator lists up to 64 servers and sends one pattern for more (pods stay small):
    `j-server-{index}.j-server.ns.svc:23456` stands for servers 0..S-1."""
    if INDEX_PLACEHOLDER not in raw:
        return raw.split(",")
    if "," in raw:
        raise ContractError(
            f"{ENV_SERVER_ADDRS} has {raw!r}: a pattern with {INDEX_PLACEHOLDER} stands alone, "
            "not in a list"
        )
    return [raw.replace(INDEX_PLACEHOLDER, str(index)) for index in range(num_servers)]


def read_context(env: Mapping[str, str] | None = None) -> JobContext:
    """Parse and cross-check the contract; raise ContractError naming the first bad variable."""
    env = os.environ if env is None else env
    role_raw = _require(env, ENV_ROLE, "'server' or 'worker'")
    try:
        role = Role(role_raw)
    except ValueError:
        raise ContractError(f"{ENV_ROLE}={role_raw!r}: expected 'server' or 'worker'") from None
    num_servers = _int(env, ENV_NUM_SERVERS, "the number of servers (>= 1)", 1)
    num_workers = _int(env, ENV_NUM_WORKERS, "the number of workers (>= 1)", 1)
    count = num_servers if role is Role.SERVER else num_workers
    index = _int(env, ENV_REPLICA_INDEX, f"this {role}'s index, 0..{count - 1}", 0)
    if index >= count:
        raise ContractError(
            f"{ENV_REPLICA_INDEX}={index} is out of range: there are {count} {role}s, "
            f"so expected 0..{count - 1}"
        )
    addrs_raw = _require(
        env,
        ENV_SERVER_ADDRS,
        f"comma-separated host:port of every server, or one pattern with {INDEX_PLACEHOLDER}",
    )
    addrs = tuple(_address(part, ENV_SERVER_ADDRS) for part in _server_list(addrs_raw, num_servers))
    if len(addrs) != num_servers:
        raise ContractError(
            f"{ENV_SERVER_ADDRS} lists {len(addrs)} addresses but {ENV_NUM_SERVERS}="
            f"{num_servers}: expected one host:port per server, in index order"
        )
    master = Address(
        _require(env, ENV_MASTER_ADDR, "server 0's host"),
        _int(env, ENV_MASTER_PORT, f"server 0's port, 1..{MAX_PORT}", 1, MAX_PORT),
    )
    if master != addrs[0]:
        raise ContractError(
            f"{ENV_MASTER_ADDR}:{ENV_MASTER_PORT} is {master} but {ENV_SERVER_ADDRS} starts with "
            f"{addrs[0]}: expected both to name server 0, the rendezvous of the job"
        )
    world_size = _int(env, ENV_WORLD_SIZE, "servers + workers", 2)
    if world_size != num_servers + num_workers:
        raise ContractError(
            f"{ENV_WORLD_SIZE}={world_size} but {ENV_NUM_SERVERS} + {ENV_NUM_WORKERS} = "
            f"{num_servers + num_workers}: expected them to agree"
        )
    rank = _int(env, ENV_RANK, "servers 0..S-1, workers S..S+W-1", 0)
    expected_rank = index if role is Role.SERVER else num_servers + index
    if rank != expected_rank:
        raise ContractError(
            f"{ENV_RANK}={rank} but {role} {index} must have rank {expected_rank} "
            "(servers take ranks 0..S-1, workers S..S+W-1)"
        )
    return JobContext(
        job_name=_require(env, ENV_JOB_NAME, "the job's name"),
        namespace=_require(env, ENV_NAMESPACE, "the job's namespace"),
        role=role,
        replica_index=index,
        num_servers=num_servers,
        num_workers=num_workers,
        server_addrs=addrs,
        master=master,
        world_size=world_size,
        rank=rank,
        training=_training(env),
        restart_count=_int(env, ENV_RESTART_COUNT, "the job's restart count (>= 0)", 0),
        secret=_secret(env),
        progress_port=_progress_port(env),
    )
