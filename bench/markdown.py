"""Markdown shared by the report's sections: table cells, and a section between its markers."""

from __future__ import annotations

from typing import Any


def row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def between_markers(text: str, lines: list[str], begin: str, end: str) -> str:
    """`text` with `lines` between `begin` and `end` (appended with them where absent): a
    generated section is rewritten and the hand-written text around it stays."""
    block = "\n".join([begin, *lines, end])
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        return head + block + tail
    return text.rstrip("\n") + "\n\n" + block + "\n"
