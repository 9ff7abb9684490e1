"""Plain text for pipes, a little colour for terminals, and text from the cluster made safe.

Everything printed from a PSJob or a pod (messages, node names, metric names) comes from the
API server and, through it, from whoever wrote the object: control characters in it could move
the cursor or rewrite the terminal, so they are replaced before anything is shown.
"""

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

CLEAR_SCREEN = "\033[H\033[2J"
TEXT_MAX = 200
"""Characters of one field (a message, a name) at most; longer ones end with an ellipsis."""

_COLORS = {"green": "32", "red": "31", "yellow": "33"}
_PHASE_COLORS = {
    "Running": "green",
    "Succeeded": "green",
    "Failed": "red",
    "Pending": "yellow",
    "Queued": "yellow",
    "Restarting": "yellow",
    "Suspended": "yellow",
    "Created": "yellow",
}
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


@dataclass(frozen=True)
class Style:
    """ANSI styling when `enabled` (stdout is a terminal), plain text otherwise."""

    enabled: bool

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def phase(self, text: str) -> str:
        color = _PHASE_COLORS.get(text)
        return self._wrap(_COLORS[color], text) if color else text


def printable(value: Any, limit: int = TEXT_MAX) -> str:
    """`value` as one line of text without control characters, at most `limit` characters."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as the API server writes it, or None for anything else."""
    if not isinstance(value, str) or not _TIMESTAMP.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def duration(delta: timedelta) -> str:
    """A duration as kubectl writes ages: 45s, 3m12s, 2h5m, 3d4h (never negative)."""
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{seconds}s" if seconds else f"{minutes}m"
    return f"{seconds}s"


def relative(when: datetime, now: datetime) -> str:
    """'12s ago' for the past, 'in 4m10s' for the future."""
    return f"{duration(now - when)} ago" if when <= now else f"in {duration(when - now)}"


def number(value: Any) -> float | None:
    """A finite number from JSON (not a bool), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def format_number(value: float) -> str:
    """Integers as integers, other numbers with four significant digits."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, as `kubectl get` prints them."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
