"""Sync pushes during backward (opt-in): exact across buckets and servers, and code between
backward() and step() (gradient clipping) still sees and decides the whole gradient."""

from pathlib import Path

import pytest
import torch
from psjob_runtime.backward_push import Bucket, make_buckets
from psjob_runtime.wire import HEADER_LEN, HEADER_ROOM, TAG_HEADER, TAG_PAYLOAD
from torch import nn

from tests.runtime.jobs import run_recorder
from tests.runtime.workloads.recorder import batch, build_model

STEPS, BATCH, SEED, LR = 5, 16, 4, 0.1
SGD = ["--optimizer", "sgd", "--lr", str(LR), "--momentum", "0.9"]


def plain_training(workers: int, clip_norm: float = 0.0) -> torch.Tensor:
    """One process on the union of the workers' batches, clipping like the workers do."""
    model = build_model(SEED)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    for step in range(STEPS):
        parts = [batch(SEED, step, w, BATCH) for w in range(workers)]
        x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        optimizer.zero_grad()
        nn.CrossEntropyLoss()(model(x), y).backward()
        if clip_norm:
            nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_buckets_run_from_the_last_parameter_to_the_first_and_cover_them_all() -> None:
    offsets = [(0, 192), (192, 208), (208, 256), (256, 259)]
    assert make_buckets(offsets, 64) == [
        Bucket(208, 259, frozenset({2, 3})),
        Bucket(192, 208, frozenset({1})),
        Bucket(0, 192, frozenset({0})),
    ]
    assert make_buckets(offsets, 1 << 20) == [Bucket(0, 259, frozenset({0, 1, 2, 3}))]


@pytest.mark.slow
def test_pushes_during_backward_across_buckets_and_servers_equal_plain_training(
    tmp_path: Path,
) -> None:
    # 64-byte buckets cut the 259-element model into 3 buckets; 2 servers cut one of them.
    result = run_recorder(
        tmp_path, "--servers", "2", "--workers", "2", *SGD,
        steps=STEPS, batch=BATCH, seed=SEED, overlap_backward=True, bucket_bytes=64,
    )  # fmt: skip
    assert result.returncode == 0, result.output
    expected = plain_training(workers=2)
    for record in result.records.values():
        assert record["overlaps_backward"], result.output
        torch.testing.assert_close(record["params"], expected, rtol=1e-5, atol=1e-6)
        # Each step's gradient crossed once (plus worker 0's initial values): never twice.
        dense = record["params"].numel() * 4
        initial = dense if record is result.records[0] else 0
        assert record["wire"]["sent"][TAG_PAYLOAD] == initial + STEPS * dense
    assert "pushes it after backward" not in result.output


@pytest.mark.slow
def test_clipping_between_backward_and_step_decides_the_gradient_the_servers_apply(
    tmp_path: Path,
) -> None:
    result = run_recorder(
        tmp_path, "--servers", "2", "--workers", "1", *SGD,
        steps=STEPS, batch=BATCH, seed=SEED, overlap_backward=True, bucket_bytes=64,
        clip_norm=0.05, clip_after_seconds=0.5,
    )  # fmt: skip
    assert result.returncode == 0, result.output
    record = result.records[0]
    unclipped = plain_training(workers=1)
    expected = plain_training(workers=1, clip_norm=0.05)
    assert not torch.allclose(expected, unclipped)  # the clipping matters
    torch.testing.assert_close(record["params"], expected, rtol=1e-5, atol=1e-6)
    # The first step found its pushed gradient clipped, sent it whole, and ended the overlap.
    # (Without the pause a part still queued when clipping ran is copied clipped: also exact.)
    assert not record["overlaps_backward"]
    assert "worker 0: step 0: the gradient changed between backward() and step()" in (result.output)


@pytest.mark.slow
def test_without_the_overlap_each_step_is_one_message_per_server_and_clipping_applies(
    tmp_path: Path,
) -> None:
    result = run_recorder(
        tmp_path, "--servers", "2", "--workers", "1", *SGD,
        steps=STEPS, batch=BATCH, seed=SEED, clip_norm=0.05,
    )  # fmt: skip
    assert result.returncode == 0, result.output
    record = result.records[0]
    torch.testing.assert_close(
        record["params"], plain_training(workers=1, clip_norm=0.05), rtol=1e-5, atol=1e-6
    )
    assert not record["overlaps_backward"]
    # Per server, before DONE: INIT, PULL and RESUME headers, then one PUSH_PULL per step with
    # the gradient behind the header's slots, counted as payload like worker 0's initial values.
    per_server = 3 * 8 * HEADER_LEN + STEPS * 8 * HEADER_ROOM
    assert record["wire"]["sent"][TAG_HEADER] == 2 * per_server
    assert record["wire"]["sent"][TAG_PAYLOAD] == (1 + STEPS) * record["params"].numel() * 4
