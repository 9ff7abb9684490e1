"""``.dockerignore`` matching with the rules of Docker's own pattern matcher (moby/patternmatcher).

The cache key of a Dockerfile build must cover exactly the files the builder sends, so the rules
follow the reference implementation rather than gitignore's: patterns are cleaned paths relative
to the context root; ``*`` and ``?`` stay within one path element, ``**`` spans any number of
them; ``!`` re-includes; the last pattern that matches a path or any of its parent folders wins.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pattern:
    regex: re.Pattern[str]
    reincludes: bool


def _translate(pattern: str) -> re.Pattern[str]:
    """A pattern as a regular expression, as moby's ``Pattern.compile`` builds it."""
    out = "^"
    index = 0
    while index < len(pattern):
        char = pattern[index]
        index += 1
        if char == "*":
            if index < len(pattern) and pattern[index] == "*":
                index += 1
                if index < len(pattern) and pattern[index] == "/":
                    index += 1  # "**/" is treated as "**"
                out += ".*" if index == len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "\\" and index < len(pattern):
            out += re.escape(pattern[index])
            index += 1
        elif char == "[":
            end = pattern.find("]", index)
            if end < 0:
                raise ValueError(
                    f"unterminated character class in .dockerignore pattern {pattern!r}"
                )
            body = pattern[index:end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            index = end + 1
        else:
            out += re.escape(char)
    return re.compile(out + "$")


def parse(text: str) -> tuple[Pattern, ...]:
    """The patterns of a ``.dockerignore`` file's text (comments and blank lines dropped)."""
    patterns = []
    for line in text.splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        reincludes = pattern.startswith("!")
        pattern = posixpath.normpath(pattern.removeprefix("!").strip())
        if len(pattern) > 1 and pattern.startswith("/"):
            pattern = pattern[1:]
        patterns.append(Pattern(_translate(pattern), reincludes))
    return tuple(patterns)


@dataclass(frozen=True)
class DockerIgnore:
    """The exclusion rules of one build context."""

    patterns: tuple[Pattern, ...]

    @classmethod
    def of_context(cls, context: Path) -> DockerIgnore:
        """The context's ``.dockerignore``; no file means nothing is excluded."""
        ignore_file = context / ".dockerignore"
        return cls(parse(ignore_file.read_text()) if ignore_file.is_file() else ())

    def excludes(self, relative_path: str) -> bool:
        """Whether the builder leaves ``relative_path`` (slash-separated) out of the context."""
        parents = relative_path.split("/")[:-1]
        candidates = [relative_path, *("/".join(parents[: i + 1]) for i in range(len(parents)))]
        excluded = False
        for pattern in self.patterns:
            if any(pattern.regex.match(candidate) for candidate in candidates):
                excluded = not pattern.reincludes
        return excluded
