"""Markdown table cells shared by the report's operator and runtime sections."""

from __future__ import annotations

from typing import Any


def row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"
