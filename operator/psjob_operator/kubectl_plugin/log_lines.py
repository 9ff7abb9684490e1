"""Pod log lines as the local launcher prints them: `[server-0] text`, interleaved by time.

The API server adds an RFC 3339 timestamp to each line when asked (`timestamps=true`); lines are
merged on it and printed without it. A node that adds none (the local cluster's node agent) still
gets every line, one pod after the other, since each pod's own lines keep their order.
"""

import heapq
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from psjob_operator.models import Role

LINE_MAX = 65_536
"""Bytes of one log line at most: a longer one is cut into pieces of this size."""
_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z ")


def source(role: Role, index: int) -> str:
    """The launcher's name for a process: `server-0`, `worker-3`."""
    return f"{role.value}-{index}"


def prefixed(name: str, text: str) -> str:
    return f"[{name}] {text}"


@dataclass(frozen=True)
class PodLog:
    """One pod's lines, in the order the pod wrote them."""

    name: str
    lines: Sequence[str]
    problem: str | None = None
    """Why the log is missing or incomplete (the container has not started, it was cut)."""


def split_timestamp(line: str) -> tuple[tuple[str, int] | None, str]:
    """((seconds, nanoseconds), text) for a timestamped line; (None, line) for any other."""
    match = _TIMESTAMP.match(line)
    if not match:
        return None, line
    seconds, fraction = match.groups()
    return (seconds, int((fraction or "").ljust(9, "0"))), line[match.end() :]


def _keyed(order: int, log: PodLog) -> Iterator[tuple[tuple[str, int], int, str]]:
    last = ("", 0)
    for line in log.lines:
        when, text = split_timestamp(line)
        last = when or last  # a line without a time stays after the one before it
        yield last, order, prefixed(log.name, text)


def interleave(logs: Sequence[PodLog]) -> Iterator[str]:
    """Every line of every log, prefixed, earliest first; ties keep the logs' order."""
    merged = heapq.merge(*(_keyed(order, log) for order, log in enumerate(logs)))
    return (text for _, _, text in merged)


class LineSplitter:
    """Bytes from a log stream in, whole lines out (at most LINE_MAX bytes each)."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, chunk: bytes) -> list[str]:
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        while len(self._partial) > LINE_MAX:
            lines.append(self._partial[:LINE_MAX])
            self._partial = self._partial[LINE_MAX:]
        return [_text(line) for piece in lines for line in _pieces(piece)]

    def end(self) -> list[str]:
        """The last line, when the stream did not end with a newline."""
        rest, self._partial = self._partial, b""
        return [_text(rest)] if rest else []


def _pieces(line: bytes) -> Iterable[bytes]:
    return (line[i : i + LINE_MAX] for i in range(0, max(len(line), 1), LINE_MAX))


def _text(line: bytes) -> str:
    return line.decode(errors="replace").rstrip("\r")
