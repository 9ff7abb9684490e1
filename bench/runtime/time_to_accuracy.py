"""Time to a fixed test accuracy on scikit-learn's digits, per mode, against one plain process.

Each mode (sync, async, ssp) trains the digits example's model (64 -> 64 -> 10) with 2 servers
and 2 workers, batch 32 per worker, SGD lr 0.05 momentum 0.9 on the servers, for a fixed number
of epochs; worker 0 measures the test accuracy of the parameters it holds every few steps. The
reference is one process training the same model with torch.optim.SGD on the whole training set
with the same total batch (2 x 32) and the same optimizer settings. Every contender is a fresh
set of processes, and times run from the moment the benchmark starts them, so that they include
what a user waits for: interpreter and torch start-up, rendezvous, then training. The time at
which the first step began is recorded too, to tell start-up from training. `--quick` leaves out
ssp and runs fewer epochs once.

    python -m bench.runtime.time_to_accuracy     # this benchmark alone, JSON on stdout
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bench.runtime.jobs import (
    MODES,
    ROOT,
    TIMEOUT_SECONDS,
    log,
    mode_settings,
    role_argv,
    run_plans,
)

TARGET = 0.95
SERVERS, WORKERS, BATCH = 2, 2, 32
LR, MOMENTUM = 0.05, 0.9
HIDDEN, SEED = 64, 0
EVAL_EVERY = 2
"""Steps between two measurements of the test accuracy (each takes well under a millisecond)."""


def _train(
    model: torch.nn.Module,
    optimizer: Any,
    data: Dataset[Any],
    test: TensorDataset,
    batch: int,
    epochs: int,
    measure: bool,
) -> dict[str, Any]:
    """Train; when `measure`, note (wall time, step, test accuracy) every EVAL_EVERY steps."""
    from psjob_runtime.examples.digits import accuracy

    loader = DataLoader(
        data, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(SEED)
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    cpu = torch.device("cpu")
    curve, step, began = [], 0, time.time()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
            step += 1
            if measure and step % EVAL_EVERY == 0:
                curve.append((time.time(), step, accuracy(model, test, cpu)))
    return {"began": began, "curve": curve, "steps": step}


def role_main(reference: bool, epochs: int) -> None:
    """A worker of the psjob job, or the reference process: prints its curve as JSON."""
    from psjob_runtime.examples.digits import accuracy, build_model, load_split

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    train, test = load_split(SEED)
    model = build_model(HIDDEN)
    if reference:
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        result = _train(model, optimizer, train, test, BATCH * WORKERS, epochs, measure=True)
    else:
        import psjob_runtime

        session = psjob_runtime.init()
        data = session.partition(train)
        result = _train(
            model, session.optimizer(model), data, test, BATCH, epochs, session.worker_index == 0
        )
        session.finish()  # installs the parameters of an async exchange still in flight
    result["final_accuracy"] = accuracy(model, test, torch.device("cpu"))
    print(json.dumps(result), flush=True)


def _summary(started: float, result: dict[str, Any]) -> dict[str, Any]:
    """Times from `started`; the first measurement at or above TARGET."""
    curve = [(t - started, step, acc) for t, step, acc in result["curve"]]
    hit = next(((t, step) for t, step, acc in curve if acc >= TARGET), None)
    return {
        "first_step_seconds": result["began"] - started,
        "seconds_to_target": hit[0] if hit else None,
        "steps_to_target": hit[1] if hit else None,
        "steps": result["steps"],
        "final_accuracy": result["final_accuracy"],
        "seconds": curve[-1][0] if curve else None,
        "curve": curve,
    }


def _psjob(mode: str, epochs: int) -> dict[str, Any]:
    training = {
        **mode_settings(mode),
        "optimizer": {"name": "sgd", "lr": LR, "momentum": MOMENTUM},
        "config": {},
    }
    started = time.time()
    argv = role_argv("time_to_accuracy", "worker", str(epochs))
    first, *_ = run_plans(SERVERS, WORKERS, training, {"worker": argv})
    return _summary(started, first)


def _reference(epochs: int) -> dict[str, Any]:
    started = time.time()
    done = subprocess.run(
        role_argv("time_to_accuracy", "reference", str(epochs)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=True,
    )
    return _summary(started, json.loads(done.stdout.strip().splitlines()[-1]))


def measure(quick: bool) -> dict[str, Any]:
    """One record per contender and repeat: time to TARGET, final accuracy, the curve."""
    modes, epochs, repeats = (MODES[:2], 4, 1) if quick else (MODES, 10, 2)
    records = []
    for repeat in range(repeats):
        for mode in (*modes, "reference"):
            log(f"time_to_accuracy: {mode}, {epochs} epochs (repeat {repeat + 1}/{repeats})")
            result = _reference(epochs) if mode == "reference" else _psjob(mode, epochs)
            records.append({"contender": mode, "repeat": repeat, **result})
    return {
        "target": TARGET,
        "servers": SERVERS,
        "workers": WORKERS,
        "batch_per_worker": BATCH,
        "lr": LR,
        "momentum": MOMENTUM,
        "epochs": epochs,
        "repeats": repeats,
        "records": records,
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--role"]:
        role_main(sys.argv[2] == "reference", int(sys.argv[3]))
    else:
        print(json.dumps(measure(quick="--quick" in sys.argv), indent=1))
