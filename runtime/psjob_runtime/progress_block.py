"""A worker's latest `session.report(...)` as it rides on a request to server 0 (protocol v5).

The block has a fixed size, so a server can post one receive for the largest request and still
tell a short message by its markers (server.py). It sits right behind the request's inline part:
behind the gradient of a PUSH_PULL, behind the header room of a bare request. Its int64 slots:

    0       step                     >= 0
    1       samples                  >= 0, every sample this worker reported in this attempt
    2       loss                     float64 bits; NaN: no finite loss reported
    3       metrics                  how many of the 16 metric slots are used, 0..16
    4..19   metric values            float64 bits, finite
    20..147 metric names             16 x 64 bytes: ASCII [A-Za-z_][A-Za-z0-9_]{0,62}, NUL-padded

A server decodes it as hostile input (`decode`): every field is checked and a bad one is named.
The worker never sends a bad one: `clean` drops what `session.report()` got wrong, with a warning,
since a typo in a metric's name must not stop the training it describes.
"""

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

MAX_METRICS = 16
NAME_BYTES = 64
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_FIXED_SLOTS = 4
SLOTS = _FIXED_SLOTS + MAX_METRICS + MAX_METRICS * NAME_BYTES // 8
BYTES = 8 * SLOTS
FLOATS = BYTES // 4
"""The block's length counted in float32 elements of a request buffer."""


class BadBlockError(ValueError):
    """A block no worker of this version sends; the message names the field."""


@dataclass(frozen=True)
class Report:
    """What server 0 keeps of one worker's report."""

    step: int
    samples: int
    """Cumulative: every sample the worker reported since it started."""
    loss: float | None
    metrics: dict[str, float] = field(default_factory=dict)


def encode(report: Report) -> bytes:
    slots = np.zeros(SLOTS, dtype=np.int64)
    slots[0], slots[1], slots[3] = report.step, report.samples, len(report.metrics)
    floats = slots.view(np.float64)
    floats[2] = math.nan if report.loss is None else report.loss
    names = slots[_FIXED_SLOTS + MAX_METRICS :].view(np.uint8).reshape(MAX_METRICS, NAME_BYTES)
    for index, (name, value) in enumerate(report.metrics.items()):
        floats[_FIXED_SLOTS + index] = value
        raw = name.encode("ascii")
        names[index, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return slots.tobytes()


def decode(raw: bytes) -> Report:
    """The report in a received block; BadBlockError naming the field when anything is off."""
    if len(raw) != BYTES:
        raise BadBlockError(f"the progress block has {len(raw)} bytes, not {BYTES}")
    slots = np.frombuffer(raw, dtype=np.int64)
    floats = slots.view(np.float64)
    step, samples, count = int(slots[0]), int(slots[1]), int(slots[3])
    if step < 0 or samples < 0:
        raise BadBlockError(f"progress step {step} and samples {samples} must be >= 0")
    if not 0 <= count <= MAX_METRICS:
        raise BadBlockError(f"progress metrics count is {count}, not 0..{MAX_METRICS}")
    names = slots[_FIXED_SLOTS + MAX_METRICS :].view(np.uint8).reshape(MAX_METRICS, NAME_BYTES)
    metrics: dict[str, float] = {}
    for index in range(count):
        name = _name(names[index].tobytes(), index)
        value = float(floats[_FIXED_SLOTS + index])
        if not math.isfinite(value):
            raise BadBlockError(f"progress metric {name!r} is {value}, not a finite number")
        if name in metrics:
            raise BadBlockError(f"progress metric {name!r} appears twice")
        metrics[name] = value
    loss = float(floats[2])
    return Report(step, samples, loss if math.isfinite(loss) else None, metrics)


def _name(raw: bytes, index: int) -> str:
    text, _, padding = raw.partition(b"\0")
    if padding.strip(b"\0") or not NAME_PATTERN.fullmatch(text.decode("latin-1")):
        shown = text[:NAME_BYTES].decode("latin-1")
        raise BadBlockError(
            f"progress metric name {index} is {shown!r}: expected [A-Za-z_][A-Za-z0-9_]{{0,62}}"
        )
    return text.decode("ascii")


def clean(
    step: object, loss: object, samples: object, metrics: Mapping[str, object]
) -> tuple[Report | None, list[tuple[str, str]]]:
    """What of one `session.report(...)` call can be sent, and what was wrong with the rest.

    The report (its samples: this call's) is None when step or samples is not an integer >= 0;
    a loss or metric that is not finite, a bad name and metrics beyond 16 are left out. One
    (kind, message) per thing left out, so that a caller can warn once per kind."""
    problems = [
        (what, f"{what}={value!r} is not an integer >= 0: the report is dropped")
        for what, value in (("step", step), ("samples", samples))
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0
    ]
    if problems:
        return None, problems
    kept_loss = _finite(loss)
    if kept_loss is None:
        problems.append(("loss", f"loss={loss!r} is not a finite number: not sent"))
    kept: dict[str, float] = {}
    for name, value in metrics.items():
        number = _finite(value)
        if not NAME_PATTERN.fullmatch(name):
            rule = "a name must match [A-Za-z_][A-Za-z0-9_]{0,62}"
            problems.append(("name", f"metric {name!r}: {rule}"))
        elif number is None:
            problems.append(("value", f"metric {name}={value!r} is not a finite number: not sent"))
        elif len(kept) == MAX_METRICS:
            problems.append(("count", f"metric {name!r}: at most {MAX_METRICS} metrics are sent"))
        else:
            kept[name] = number
    return Report(int(step), int(samples), kept_loss, kept), problems  # type: ignore[call-overload]


def _finite(value: object) -> float | None:
    """`value` as a float when it is a finite number (a bool is not), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
