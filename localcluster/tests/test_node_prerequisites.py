"""A machine without the node's packages gets one line naming them, not a traceback."""

from pathlib import Path

import pytest
from psjob_localcluster.node import prerequisites


def test_missing_packages_are_named_with_the_make_target(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no command at all
    missing = "; ".join(prerequisites.missing_prerequisites())
    for package in ("containerd", "runc", "iptables", "conntrack", "iproute2"):
        assert package in missing
    assert "make node-deps" in missing
