"""Suite-wide checks: the pytest-xdist groups that keep one control plane and one kubelet node per
worker must really hold, or tests on the other worker wait on a machine-wide lock until they time
out (CI, 2026-12-03: pytest 9.2 with pytest-xdist 3.8 spread them over both workers silently)."""

from typing import Any

import pytest


@pytest.hookimpl(optionalhook=True)  # pytest without xdist has no such hook
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """On the controller, once a worker collected: xdist names each group in the node ids."""
    if node.config.getoption("dist") != "loadgroup":
        return
    grouped = {"tests/e2e/", "tests/kubelet/"}
    meant = [i for i in ids if any(i.startswith(prefix) for prefix in grouped)]
    if meant and not any("@" in i for i in meant):
        pytest.exit(
            f"pytest-xdist did not group the {len(meant)} cluster tests (no @group in their node "
            "ids): this pytest and pytest-xdist do not work together; see the pytest pin in "
            "requirements/dev.in",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
