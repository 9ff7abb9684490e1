"""The Debian mirror this machine's apt is configured with, read at run time.

The base image is bootstrapped from the same mirror the machine installs its own packages from,
so it works wherever apt works (a local mirror, a snapshot, a proxy) and no mirror is hard-coded.
"""

from __future__ import annotations

from pathlib import Path

APT_CONFIG = Path("/etc/apt")


class NoMirrorError(RuntimeError):
    """No configured apt source serves the suite."""


def _one_line_entries(text: str) -> list[tuple[str, list[str]]]:
    """(URI, [suite]) of each ``deb [options] URI suite components`` line."""
    entries = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            entries.append((words[0], [words[1]]))
    return entries


def _deb822_entries(text: str) -> list[tuple[str, list[str]]]:
    """(URI, suites) of each stanza with ``Types: deb`` (and not ``Enabled: no``)."""
    entries: list[tuple[str, list[str]]] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
            suites = fields.get("suites", "").split()
            entries.extend((uri, suites) for uri in fields.get("uris", "").split())
    return entries


def debian_mirror(suite: str, config: Path = APT_CONFIG) -> str:
    """The first configured ``deb`` source that serves ``suite`` itself (not -updates etc.)."""
    files = [config / "sources.list", *sorted((config / "sources.list.d").glob("*"))]
    for file in files:
        if file.suffix == ".sources":
            entries = _deb822_entries(file.read_text())
        elif file.suffix == ".list" or file.name == "sources.list":
            entries = _one_line_entries(file.read_text()) if file.is_file() else []
        else:
            continue
        for uri, suites in entries:
            if suite in suites:
                return uri.rstrip("/")
    raise NoMirrorError(f"no apt source for Debian {suite} in {config}/sources.list(.d)")
