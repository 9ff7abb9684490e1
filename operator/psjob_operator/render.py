"""Pure rendering: a PSJob becomes one headless Service per role, one Pod per replica and the
objects beside them (its Secret, PodGroup and NetworkPolicy).

No I/O here. The operator applies what this returns; `psjob render` prints it for review.
"""

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from psjob_operator import contract
from psjob_operator.models import PSJob, Role
from psjob_operator.names import (
    job_labels,
    pod_fqdn,
    pod_labels,
    pod_name,
    role_labels,
    secret_name,
    service_name,
)

Manifest = dict[str, Any]

ATTEMPT_ANNOTATION = f"{contract.GROUP}/attempt"
"""On each pod: the job attempt (PSJOB_RESTART_COUNT) it belongs to.

Pod names repeat across restarts, so this tells a leftover pod of an older attempt from a new one.
"""


INCARNATION_ANNOTATION = f"{contract.GROUP}/incarnation"
"""On a pod recreated in place (runPolicy.recovery InPlace): how many times its replica was,
in this attempt; "1" on the first replacement. The original pods have none."""

SPEC_HASH_ANNOTATION = f"{contract.GROUP}/spec-hash"
"""On each pod: a digest of the spec it was rendered from; a mismatch means the job was edited."""


OPERATOR_ONLY_TRAINING = {"total_steps"}
"""Fields of spec.training for the operator alone: not handed to the runtime (whose older
images refuse unknown settings) and not in the spec hash (changing them restarts nothing)."""


def spec_hash(job: PSJob, workers: int | None = None) -> str:
    """Digest of every spec field that shapes the pods (not the lifecycle rules of runPolicy).

    `workers`: the digest of this spec with that many workers, the one a pod made before a
    `kubectl scale` carries (plan/snapshot.py tells such a pod from one of an edited spec).
    """
    spec = job.spec
    worker_spec = spec.workers.model_dump(mode="json")
    if workers is not None:
        worker_spec["replicas"] = workers
    shaping = {
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "servers": spec.servers.model_dump(mode="json"),
        "workers": worker_spec,
        "training": spec.training.model_dump(mode="json", exclude=OPERATOR_ONLY_TRAINING),
        "scheduling": spec.run_policy.scheduling_policy.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


def owner_reference(job: PSJob) -> Manifest:
    return {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "name": job.metadata.name,
        "uid": job.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(job: PSJob, name: str, labels: dict[str, str]) -> Manifest:
    meta: Manifest = {"name": name, "namespace": _namespace(job), "labels": labels}
    if job.metadata.uid:
        meta["ownerReferences"] = [owner_reference(job)]
    return meta


def _namespace(job: PSJob) -> str:
    return job.metadata.namespace or "default"


SERVER_ADDRESS_LIST_LIMIT = 64
"""Up to this many servers PSJOB_SERVER_ADDRS lists every address; beyond, it is one pattern.

A list grows every pod by ~58 bytes per server: at 10,000 servers each pod rendered to 590 KB
and the job's 20,000 pods to 11.8 GB in etcd. The pattern keeps a pod at ~2 KB.
"""

INDEX_PLACEHOLDER = "{index}"
"""In a PSJOB_SERVER_ADDRS pattern: the server index, 0..S-1 (the runtime expands it)."""


def server_addresses(job: PSJob) -> str:
    """PSJOB_SERVER_ADDRS: `host:port` of every server in index order, or their pattern."""
    port = job.spec.servers.port
    namespace = _namespace(job)
    if job.spec.servers.replicas > SERVER_ADDRESS_LIST_LIMIT:
        return f"{pod_fqdn(job.metadata.name, namespace, Role.SERVER, INDEX_PLACEHOLDER)}:{port}"
    return ",".join(
        f"{pod_fqdn(job.metadata.name, namespace, Role.SERVER, index)}:{port}"
        for index in range(job.spec.servers.replicas)
    )


def contract_env(job: PSJob, role: Role, index: int, attempt: int) -> list[Manifest]:
    """The environment contract of docs/api.md, in a fixed order."""
    servers, workers = job.spec.servers.replicas, job.spec.workers.replicas
    rank = index if role == Role.SERVER else servers + index
    master = pod_fqdn(job.metadata.name, _namespace(job), Role.SERVER, 0)
    values = {
        contract.ENV_JOB_NAME: job.metadata.name,
        contract.ENV_NAMESPACE: _namespace(job),
        contract.ENV_ROLE: role.value,
        contract.ENV_REPLICA_INDEX: str(index),
        contract.ENV_NUM_SERVERS: str(servers),
        contract.ENV_NUM_WORKERS: str(workers),
        contract.ENV_SERVER_ADDRS: server_addresses(job),
        contract.ENV_MASTER_ADDR: master,
        contract.ENV_MASTER_PORT: str(job.spec.servers.port),
        contract.ENV_WORLD_SIZE: str(servers + workers),
        contract.ENV_RANK: str(rank),
        contract.ENV_TRAINING: job.spec.training.model_dump_json(
            by_alias=True, exclude=OPERATOR_ONLY_TRAINING
        ),
        contract.ENV_RESTART_COUNT: str(attempt),
        contract.ENV_PROGRESS_PORT: str(contract.DEFAULT_PROGRESS_PORT),
    }
    secret = {
        "name": contract.ENV_SECRET,
        "valueFrom": {
            "secretKeyRef": {"name": secret_name(job.metadata.name), "key": contract.SECRET_KEY}
        },
    }
    return [*({"name": name, "value": value} for name, value in values.items()), secret]


def render_secret(job: PSJob, token: str) -> Manifest:
    """The job's authentication Secret; the caller draws `token`, so rendering stays pure."""
    labels = job_labels(job.metadata.name)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(job, secret_name(job.metadata.name), labels),
        "type": "Opaque",
        "stringData": {contract.SECRET_KEY: token},
    }


def render_service(job: PSJob, role: Role) -> Manifest:
    labels = role_labels(job.metadata.name, role)
    spec: Manifest = {
        "clusterIP": "None",
        "publishNotReadyAddresses": True,
        "selector": labels,
    }
    if role == Role.SERVER:
        port = job.spec.servers.port
        spec["ports"] = [{"name": contract.RENDEZVOUS_PORT_NAME, "port": port, "targetPort": port}]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(job, service_name(job.metadata.name, role), labels),
        "spec": spec,
    }


def _main_container(
    job: PSJob, role: Role, index: int, attempt: int, user_main: Manifest
) -> Manifest:
    """The role's container: the user's overlay for `psjob` first, the operator's fields on top."""
    replica = job.spec.replica_spec(role)
    container: Manifest = {**user_main, "name": contract.MAIN_CONTAINER, "image": job.spec.image}
    if job.spec.image_pull_policy:
        container["imagePullPolicy"] = job.spec.image_pull_policy.value
    command = replica.command
    if command is None and role == Role.SERVER:
        command = list(contract.DEFAULT_SERVER_COMMAND)
    if command is not None:
        container["command"] = command
    if replica.args is not None:
        container["args"] = replica.args
    container["env"] = [
        *contract_env(job, role, index, attempt),
        *[env.model_dump(by_alias=True, exclude_none=True) for env in replica.env],
        *user_main.get("env", []),
    ]
    resources = replica.resources.rendered()
    if resources:
        container["resources"] = resources
    mounts = [m.model_dump(by_alias=True, exclude_none=True) for m in replica.volume_mounts]
    if mounts or "volumeMounts" in user_main:
        container["volumeMounts"] = [*user_main.get("volumeMounts", []), *mounts]
    ports = _merged_ports(_operator_ports(role, replica.port), user_main.get("ports") or [])
    if ports:
        container["ports"] = ports
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    return container


def _operator_ports(role: Role, rendezvous: int) -> list[Manifest]:
    if role != Role.SERVER:
        return []
    return [
        {"name": contract.RENDEZVOUS_PORT_NAME, "containerPort": rendezvous, "protocol": "TCP"},
        {
            "name": contract.PROGRESS_PORT_NAME,
            "containerPort": contract.DEFAULT_PROGRESS_PORT,
            "protocol": "TCP",
        },
    ]


def _merged_ports(operator: list[Manifest], user: Any) -> list[Any]:
    """The operator's ports, then the template's own for the main container but those that name
    or number one of the operator's (same protocol): the API server refuses two ports of one
    name in a container, and the operator's port is the one the runtime listens on. Anything
    malformed is passed on for the API server to refuse, naming the field."""
    names = {port["name"] for port in operator}
    numbers = {(port["containerPort"], port["protocol"]) for port in operator}

    def repeats_the_operator(port: Any) -> bool:
        return isinstance(port, dict) and (
            port.get("name") in names
            or (port.get("containerPort"), port.get("protocol", "TCP")) in numbers
        )

    user_ports = user if isinstance(user, list) else [user]
    return [*operator, *(port for port in user_ports if not repeats_the_operator(port))]


def render_pod(
    job: PSJob,
    role: Role,
    index: int,
    attempt: int = 0,
    digest: str | None = None,
    incarnation: int = 0,
) -> Manifest:
    """One pod; `digest` is `spec_hash(job)`, passed in by callers that render many pods;
    `incarnation` above 0 marks a replacement recreated in place (its env is the original's)."""
    replica = job.spec.replica_spec(role)
    template = replica.template
    spec = copy.deepcopy(template.spec)
    containers: list[Manifest] = spec.pop("containers", [])
    user_main = next((c for c in containers if c.get("name") == contract.MAIN_CONTAINER), {})
    sidecars = [c for c in containers if c.get("name") != contract.MAIN_CONTAINER]

    name = pod_name(job.metadata.name, role, index)
    spec.update(
        {
            "hostname": name,
            "subdomain": service_name(job.metadata.name, role),
            "restartPolicy": "Never",
            "containers": [_main_container(job, role, index, attempt, user_main), *sidecars],
        }
    )
    scheduling = job.spec.run_policy.scheduling_policy
    if scheduling.scheduler_name:
        spec["schedulerName"] = scheduling.scheduler_name
    if scheduling.priority_class_name:
        spec["priorityClassName"] = scheduling.priority_class_name

    labels = {**template.metadata.labels, **pod_labels(job.metadata.name, role, index)}
    annotations = {
        **template.metadata.annotations,
        ATTEMPT_ANNOTATION: str(attempt),
        SPEC_HASH_ANNOTATION: digest or spec_hash(job),
    }
    annotations.pop(INCARNATION_ANNOTATION, None)  # the operator's alone, as the attempt is
    if incarnation:
        annotations[INCARNATION_ANNOTATION] = str(incarnation)
    gang = gang_scheduler(job)
    if gang is not None and gang.group_label:
        labels[gang.group_label] = job.metadata.name
    if gang is not None and gang.group_annotation:
        annotations[gang.group_annotation] = job.metadata.name
    metadata = _metadata(job, name, labels)
    metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


@dataclass(frozen=True)
class GangScheduler:
    """Where the PodGroup of a gang-scheduled job lives, and how a pod names its group."""

    api_version: str
    crd: str
    group_label: str | None
    group_annotation: str | None


VOLCANO = GangScheduler(
    "scheduling.volcano.sh/v1beta1",
    "podgroups.scheduling.volcano.sh",
    None,
    "scheduling.k8s.io/group-name",
)
SCHEDULER_PLUGINS = GangScheduler(
    "scheduling.x-k8s.io/v1alpha1",
    "podgroups.scheduling.x-k8s.io",
    "scheduling.x-k8s.io/pod-group",
    None,
)


def gang_scheduler(job: PSJob) -> GangScheduler | None:
    """Volcano when the pods use it, scheduler-plugins' coscheduling otherwise; None: no gang."""
    policy = job.spec.run_policy.scheduling_policy
    if policy.min_available is None:
        return None
    return VOLCANO if policy.scheduler_name == "volcano" else SCHEDULER_PLUGINS


def render_pod_group(job: PSJob) -> Manifest | None:
    gang = gang_scheduler(job)
    policy = job.spec.run_policy.scheduling_policy
    if gang is None or policy.min_available is None:
        return None
    spec: Manifest = {"minMember": policy.min_available}
    if policy.queue and gang is VOLCANO:
        spec["queue"] = policy.queue
    return {
        "apiVersion": gang.api_version,
        "kind": "PodGroup",
        "metadata": _metadata(job, job.metadata.name, job_labels(job.metadata.name)),
        "spec": spec,
    }


def render_network_policy(job: PSJob, peers: tuple[Manifest, ...]) -> Manifest | None:
    """The job's NetworkPolicy (isolation.py), or None when the job turned it off.

    It admits any port from the job's own pods and, from `peers`, the servers' progress port.
    """
    if not job.spec.network_policy.enabled:
        return None
    labels = job_labels(job.metadata.name)
    ingress: list[Manifest] = [{"from": [{"podSelector": {"matchLabels": labels}}]}]
    if peers:
        port = {"protocol": "TCP", "port": contract.PROGRESS_PORT_NAME}
        ingress.append({"from": list(peers), "ports": [port]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(job, job.metadata.name, labels),
        "spec": {
            "podSelector": {"matchLabels": labels},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def render_services(job: PSJob) -> list[Manifest]:
    return [render_service(job, role) for role in Role]


def render_pods(job: PSJob, attempt: int = 0) -> list[Manifest]:
    digest = spec_hash(job)
    return [
        render_pod(job, role, index, attempt, digest)
        for role in Role
        for index in range(job.spec.replica_spec(role).replicas)
    ]


def render_all(
    job: PSJob, attempt: int = 0, network_peers: tuple[Manifest, ...] = ()
) -> list[Manifest]:
    """Services first: their DNS names must exist before any pod looks them up; the policy
    before the pods, so that no pod is ever open to the cluster."""
    extras = [render_pod_group(job), render_network_policy(job, network_peers)]
    return [*render_services(job), *(m for m in extras if m), *render_pods(job, attempt)]
