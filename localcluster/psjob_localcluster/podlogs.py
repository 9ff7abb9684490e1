"""Container logs of a namespace's pods, for a failing test's report.

The node agent and the kubelet keep them alike: a folder per pod named ``<namespace>_<pod>[_<uid>]``
holding a folder per container with one ``<restart>.log`` per run.
"""

from __future__ import annotations

from pathlib import Path

from psjob_localcluster.controlplane import tail


def pod_log_tails(pod_logs: Path, namespace: str, lines: int = 20) -> str:
    """The tail of the latest log of every container of every pod run in ``namespace``."""
    parts = []
    for pod_dir in sorted(pod_logs.glob(f"{namespace}_*")):
        pod = pod_dir.name.split("_")[1]
        for container_dir in sorted(p for p in pod_dir.iterdir() if p.is_dir()):
            logs = sorted(container_dir.glob("*.log"), key=lambda p: int(p.stem))
            if logs:
                parts.append(
                    f"===== pod {pod} container {container_dir.name} =====\n{tail(logs[-1], lines)}"
                )
    return "\n".join(parts)
