"""Sparklines: a series of readings as one line of block characters, lowest to highest."""

from collections.abc import Sequence

from psjob_operator.kubectl_plugin.terminal import format_number

BLOCKS = "▁▂▃▄▅▆▇█"
ASCII_BLOCKS = "_.-=+*#@"
"""For a stdout that cannot encode the blocks (a pipe with an ASCII locale)."""
GAP = " "
"""A reading without this value (no loss reported yet)."""


def sparkline(values: Sequence[float | None], glyphs: str = BLOCKS) -> str:
    """One glyph per value, scaled between the series' minimum and maximum.

    A flat series sits in the middle; None values leave a gap.
    """
    known = [v for v in values if v is not None]
    if not known:
        return GAP * len(values)
    low, high = min(known), max(known)
    top = len(glyphs) - 1
    line = []
    for value in values:
        if value is None:
            line.append(GAP)
        elif high == low:
            line.append(glyphs[top // 2])
        else:
            line.append(glyphs[round((value - low) / (high - low) * top)])
    return "".join(line)


def chart_line(
    label: str, values: Sequence[float | None], width: int, glyphs: str = BLOCKS
) -> str | None:
    """`label  ▁▂▅█  min .. max, last`: the last `width` values; None without any value."""
    recent = list(values)[-width:]
    known = [v for v in recent if v is not None]
    if not known:
        return None
    low, high = format_number(min(known)), format_number(max(known))
    return f"{label}  {sparkline(recent, glyphs)}  {low} .. {high}, last {format_number(known[-1])}"
