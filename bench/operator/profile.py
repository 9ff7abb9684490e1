"""Summarise a py-spy profile of the operator (`--format raw --threads`) for bench/README.md.

A raw profile has one line per distinct stack: `thread (tid): name;frame;...;frame count`.
Stacks whose innermost frame waits (for the API server's answer, for work, for the selector)
are left out: they cost no CPU. What remains is split by thread (the event loop runs kopf and
the reconciler one step at a time; the API threads run the blocking client) and ranked by the
inclusive share of the frames that belong to the operator, kopf, and connection set-up.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

WAITING = (
    "SSLSocket.read",
    "EpollSelector.select",
    "select",
    "poll",
    "wait",
    "acquire",
    "_worker",
    "_wait_for_tstate_lock",
)
"""Innermost frames of a thread that is blocked, not working."""
INTERESTING = re.compile(
    r"psjob_operator/(?!cli\.py)|kopf/_core/reactor/processing|kopf/_cogs/configs/diffbase|copy\.py"
    r"|HTTPSConnection\.connect|SSLSocket\.do_handshake|BaseModel\.model_(dump|validate)"
)


def _thread_group(header: str) -> str:
    name = re.sub(r"^thread \(\d+\):\s*", "", header)
    return re.sub(r"_\d+$", "", name) or "unnamed"


def summary(path: Path, top: int = 14) -> list[str]:
    """Markdown lines: busy samples per thread group, then the hottest interesting frames."""
    inclusive: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        header, *frames = stack.split(";")
        frames = [re.sub(r":\d+\)$", ")", f) for f in frames]
        if not frames or frames[-1].split(" (")[0] in WAITING:
            continue
        samples = int(count)
        total += samples
        by_thread[_thread_group(header)] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        return ["(the profile holds no busy samples)"]
    threads = ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in by_thread.most_common(4))
    lines = [
        f"{total} busy samples at 100 Hz; by thread: {threads}.",
        "",
        "| frame (file) | share of busy samples, inclusive |",
        "| --- | ---: |",
    ]
    ranked = [(f, n) for f, n in inclusive.most_common() if INTERESTING.search(f)]
    lines += [f"| `{frame}` | {100 * n / total:.1f}% |" for frame, n in ranked[:top]]
    return lines
