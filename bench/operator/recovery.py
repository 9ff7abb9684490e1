"""Recovery on the dev cluster: the recovery benchmark's three jobs as PSJobs, through the operator.

bench/runtime/recovery.py measures the runtime on the local launcher; this runs the same work on
`make dev-cluster`'s cluster (a real kube-apiserver, etcd and controller-manager, pods as
processes of the node agent) with `psjob operator` as its own process, so that a loss costs what
it costs a user: the operator noticing it, deleting and creating pods, and, for a whole-job
restart, its back-off (2, 4, 8, ... s). Three PSJobs one after another:
1. no failures;
2. `runPolicy.recovery: InPlace` with a server pod deleted every 60 s and a worker pod every 45 s
   (offset 22.5 s), counted from the job's first applied step, each deleted at once
   (`gracePeriodSeconds: 0`: the process is killed, as on a lost node);
3. the same schedule with `runPolicy.recovery: RestartJob` (every loss restarts the whole job
   from the newest complete checkpoint).

The workers run bench.runtime.recovery's worker role, which prints its first applied step and
the end of any stall with the time; the pods share this machine's clock. Goodput: the job's
useful samples over the time from `kubectl apply` to the job's Succeeded, start-up included; a
restart-job run still going at CAP_FACTOR x the failure-free run's time is stopped and counted as
in bench/runtime/recovery.py (an upper bound of its goodput).

Time back in training, for each deletion of run 2:
- a worker: from the deletion to its replacement's first applied step;
- a server: from the deletion to the end of the first stall that began before it (the other
  workers' steps wait for the lost server in sync mode; the first step after it returns).

    python -m bench.operator.recovery [--quick]   # writes bench/out/cluster-recovery.json
    python -m bench.operator.recovery_report      # its section of bench/README.md
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from psjob_localcluster import LocalCluster, local_cluster
from psjob_localcluster.waiting import wait_for

from bench.operator.harness import OPERATOR_NAMESPACE, start_operator, stop_operator
from bench.operator.recorder import GROUP, PLURAL, VERSION
from bench.runtime.jobs import ROOT, log
from bench.runtime.recovery import (
    BATCH,
    CAP_FACTOR,
    EVAL_SAMPLES,
    FIRST_STEP,
    SERVERS,
    STALLED,
    TABLE_ROWS,
    WORKERS,
    Kill,
    Save,
    record_run,
    schedule,
)
from tests.e2e.operator.support import raw

OUT = ROOT / "bench" / "out"
POLL_SECONDS = 0.3
"""How often the pods, their logs and the job's status are read."""
BACKOFF_LIMIT = 1000
"""The schema's largest: no restart-job run gives up."""
TIMEOUT_SECONDS = 120
JOBS = (("failure_free", "InPlace", False), ("in_place", "InPlace", True))
RESTART_JOB = ("restart_job", "RestartJob", True)


@dataclass(frozen=True)
class Size:
    steps: int
    checkpoint_every: int


FULL = Size(steps=3000, checkpoint_every=500)
"""About 3 minutes without failures on 2 quiet cores: four server and five worker deletions."""
QUICK = Size(steps=1200, checkpoint_every=300)

FIRST = re.compile(rf"^{FIRST_STEP} (\d+) at ([\d.]+)")
STALL = re.compile(rf"^{STALLED} ([\d.]+) s before step (\d+) at ([\d.]+)")
PROGRESS = re.compile(r"^progress worker \d+\s+step (\d+)")
RESTORED = re.compile(r"^server \d+: restored checkpoint step (\d+)")
AUC = re.compile(r"test AUC ([\d.]+), hidden model's AUC ([\d.]+)")


def manifest(name: str, recovery: str, size: Size, checkpoints: Path) -> dict[str, Any]:
    """The ctr work of bench/runtime/recovery.py as a PSJob (the image is not pulled: the node
    agent runs each pod's command in this checkout's virtual environment)."""
    config = {
        "tableRows": TABLE_ROWS,
        "batchSize": BATCH,
        "steps": size.steps,
        "evalSamples": EVAL_SAMPLES,
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PSJob",
        "metadata": {"name": name},
        "spec": {
            "image": "ghcr.io/psjob/runtime:0.1.0",
            "servers": {"replicas": SERVERS, "restartPolicy": "ExitCode"},
            "workers": {
                "replicas": WORKERS,
                "restartPolicy": "ExitCode",
                "command": ["python", "-m", "bench.runtime.recovery", "--role"],
                "env": [{"name": "PYTHONPATH", "value": str(ROOT)}],
            },
            "training": {
                "mode": "sync",
                "optimizer": {"name": "adagrad", "lr": 0.05},
                "checkpoint": {"dir": str(checkpoints), "everySteps": size.checkpoint_every},
                "timeoutSeconds": TIMEOUT_SECONDS,
                "config": config,
            },
            "runPolicy": {"recovery": recovery, "backoffLimit": BACKOFF_LIMIT},
        },
    }


class Job:
    """One PSJob: its pods' logs followed, the schedule carried out and each return timed."""

    def __init__(self, api: client.ApiClient, name: str, kills: bool, cap: float | None):
        self.core, self.custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        self.name, self.kills_on, self.cap = name, kills, cap
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.training = threading.Event()
        self.began = 0.0
        """time.time() at the apply: every time in the record is seconds after it."""
        self.trained_from: float | None = None
        self.read: dict[str, int] = {}
        """Lines of each pod's log (by uid) already taken in."""
        self.logs: dict[str, list[str]] = {}
        self.running: dict[str, str] = {}
        """The uid of each pod name seen running."""
        self.kills: list[dict[str, Any]] = []
        self.first_steps: list[dict[str, Any]] = []
        self.stalls: list[dict[str, Any]] = []
        self.reached = [0] * WORKERS
        self.auc: tuple[float, float] | None = None

    def _now(self) -> float:
        return time.time() - self.began

    def pod(self, role: str, index: int) -> str:
        return f"{self.name}-{role}-{index}"

    def run(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.began, started, load = time.time(), time.monotonic(), os.getloadavg()[0]
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, OPERATOR_NAMESPACE, PLURAL, manifest
        )
        killer = threading.Thread(target=self._kill_on_schedule, daemon=True)
        if self.kills_on:
            killer.start()
        loads: list[float] = []
        phase, stopped_at = "", None
        while phase not in ("Succeeded", "Failed"):
            if self.cap is not None and time.monotonic() - started >= self.cap:
                stopped_at = time.monotonic() - started
                log(f"cluster recovery: {self.name} still running at {stopped_at:.0f} s: stopping")
                break
            self._look()
            status = self._status()
            phase = status.get("phase", "")
            if self._now() >= 10.0 * len(loads):
                loads.append(os.getloadavg()[0])
            time.sleep(POLL_SECONDS)
        wall = time.monotonic() - started
        self.done.set()
        if killer.is_alive():
            killer.join()
        self._look()
        status = self._status()
        events = self._events()
        samples = manifest["spec"]["training"]["config"]["steps"] * BATCH * WORKERS
        if stopped_at is not None:
            samples = sum(step + 1 for step in self.reached) * BATCH
        return {
            "recovery": manifest["spec"]["runPolicy"]["recovery"] if self.kills_on else None,
            "phase": phase,
            "finished": phase == "Succeeded",
            "stopped_at": stopped_at,
            "wall_seconds": wall,
            "first_step_after": self.trained_from,
            "useful_samples": samples,
            "goodput": samples / (stopped_at or wall),
            "whole_restarts": status.get("restartCount", 0),
            "recovered_in_place": status.get("recoveries", 0),
            "test_auc": self.auc[0] if self.auc else None,
            "hidden_auc": self.auc[1] if self.auc else None,
            "kills": self.kills,
            "first_steps": self.first_steps,
            "stalls": self.stalls,
            "events": events,
            "load_before": load,
            "load_after": os.getloadavg()[0],
            "load_mean": sum(loads) / len(loads) if loads else load,
        }

    def _status(self) -> dict[str, Any]:
        job = raw(
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            OPERATOR_NAMESPACE,
            PLURAL,
            self.name,
        )
        return dict(job.get("status") or {})

    def _events(self) -> list[str]:
        found = self.core.list_namespaced_event(
            OPERATOR_NAMESPACE, field_selector=f"involvedObject.name={self.name}"
        )
        ordered = sorted(found.items, key=lambda e: str(e.last_timestamp or e.event_time))
        return [f"{e.last_timestamp} {e.reason}: {e.message}" for e in ordered]

    def _look(self) -> None:
        """Take in every pod's new log lines, and note replacements that run."""
        pods = raw(
            self.core.list_namespaced_pod,
            OPERATOR_NAMESPACE,
            label_selector=f"psjob.dev/job-name={self.name}",
        )
        for pod in pods["items"]:
            name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
            phase = pod.get("status", {}).get("phase")
            if phase == "Running" and self.running.get(name) != uid:
                self.running[name] = uid
                self._replaced(name)
            if phase not in ("Running", "Succeeded", "Failed"):
                continue
            try:
                text = self.core.read_namespaced_pod_log(name, OPERATOR_NAMESPACE)
            except ApiException:
                continue
            lines = text.splitlines()
            fresh = lines[self.read.get(uid, 0) :]
            self.read[uid] = len(lines)
            self.logs.setdefault(uid, []).extend(fresh)
            for line in fresh:
                self._follow(name, line)

    def _replaced(self, name: str) -> None:
        with self.lock:
            for kill in reversed(self.kills):
                if kill["pod"] == name:
                    if kill["running_after"] is None:
                        kill["running_after"] = self._now() - kill["killed_at"]
                    return

    def _follow(self, pod: str, line: str) -> None:
        index = pod.rsplit("-", 1)[1]
        if found := FIRST.match(line):
            step, when = int(found.group(1)), float(found.group(2)) - self.began
            with self.lock:
                self.first_steps.append({"worker": int(index), "step": step, "at": when})
                if self.trained_from is None:
                    self.trained_from = when
                    self.training.set()
                for kill in reversed(self.kills):
                    if kill["pod"] == pod and kill["killed_at"] < when:
                        if kill["back_after"] is None:
                            kill["back_after"] = when - kill["killed_at"]
                            kill["resumed_at_step"] = step
                        break
        elif found := STALL.match(line):
            seconds, when = float(found.group(1)), float(found.group(3)) - self.began
            with self.lock:
                self.stalls.append({"worker": int(index), "seconds": seconds, "at": when})
                for kill in self.kills:
                    began = when - seconds
                    waited = kill["killed_at"] < when and began <= kill["killed_at"] + 1.0
                    if kill["role"] == "server" and kill["back_after"] is None and waited:
                        kill["back_after"] = when - kill["killed_at"]
        elif found := PROGRESS.match(line):
            self.reached[int(index)] = int(found.group(1))
        elif found := RESTORED.match(line):
            with self.lock:
                for kill in reversed(self.kills):
                    if kill["pod"] == pod:
                        kill.setdefault("restored_step", int(found.group(1)))
                        break
        elif found := AUC.search(line):
            self.auc = (float(found.group(1)), float(found.group(2)))

    def _kill_on_schedule(self) -> None:
        while not self.training.wait(0.5):
            if self.done.is_set():
                return
        origin = time.monotonic()
        for kill in schedule(horizon=24 * 3600):
            if self.done.wait(max(0.0, origin + kill.at - time.monotonic())):
                return
            self._kill(kill)

    def _kill(self, kill: Kill) -> None:
        role, index = kill.victim.split("-")
        pod = self.pod(role, int(index))
        with self.lock:
            steps = list(self.reached)
        try:
            self.core.delete_namespaced_pod(pod, OPERATOR_NAMESPACE, grace_period_seconds=0)
        except ApiException as error:
            if error.status == 404:  # between a whole restart's deletion and its new pods
                return
            raise
        record: dict[str, Any] = {
            "victim": kill.victim,
            "pod": pod,
            "role": role,
            "scheduled": kill.at,
            "killed_at": self._now(),
            "workers_at_step": steps,
            "running_after": None,
            "back_after": None,
        }
        with self.lock:
            self.kills.append(record)
        log(f"cluster recovery: {self.name}: deleted {pod} at {kill.at:.1f} s")

    def delete(self) -> None:
        self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, OPERATOR_NAMESPACE, PLURAL, self.name
        )
        wait_for(
            lambda: (
                not self.core.list_namespaced_pod(
                    OPERATOR_NAMESPACE, label_selector=f"psjob.dev/job-name={self.name}"
                ).items
            ),
            f"{self.name}'s pods gone",
            timeout=180,
        )


def _prepare(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    cluster.wait_established("psjobs.psjob.dev")
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE)
    core = client.CoreV1Api(cluster.api_client())
    wait_for(
        lambda: core.list_namespaced_service_account(OPERATOR_NAMESPACE).items,
        "the namespace's default ServiceAccount",
    )


def measure(root: Path, quick: bool, save: Save) -> dict[str, Any]:
    size = QUICK if quick else FULL
    jobs: dict[str, dict[str, Any]] = {}
    record = {
        "servers": SERVERS,
        "workers": WORKERS,
        "batch_per_worker": BATCH,
        "table_rows": TABLE_ROWS,
        "steps": size.steps,
        "checkpoint_every": size.checkpoint_every,
        "cap_factor": CAP_FACTOR,
        "jobs": jobs,
    }
    with local_cluster(root / "cluster") as cluster:
        _prepare(cluster)
        operator, pid = start_operator(cluster, root, None)
        try:
            api = cluster.api_client()
            cap: float | None = None
            for key, recovery, kills in (*JOBS, RESTART_JOB):
                capped = cap if key == "restart_job" else None
                name = f"recovery-{key.replace('_', '-')}"
                log(f"cluster recovery: {name}, {size.steps} steps")
                checkpoints = Path(tempfile.mkdtemp(prefix=f"psjob-{name}-", dir=root))
                job = Job(api, name, kills, capped)
                try:
                    jobs[key] = job.run(manifest(name, recovery, size, checkpoints))
                finally:
                    job.delete()
                    shutil.rmtree(checkpoints, ignore_errors=True)
                result = jobs[key]
                log(
                    f"cluster recovery: {name}: {result['phase'] or 'stopped'} in "
                    f"{result['wall_seconds']:.0f} s, {len(result['kills'])} deletions, "
                    f"{result['recovered_in_place']} in place, "
                    f"{result['whole_restarts']} whole restarts"
                )
                if key == "failure_free":
                    cap = CAP_FACTOR * result["wall_seconds"]
                save(record)
        finally:
            stop_operator(operator, pid)
    return record


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.operator.recovery", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK.steps} steps, not {FULL.steps}"
    )
    parser.add_argument("--out", type=Path, default=OUT / "cluster-recovery.json")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="psjob-cluster-recovery-"))
    try:
        record_run(
            "bench.operator.recovery",
            args.quick,
            args.out,
            lambda save: measure(root, args.quick, save),
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
