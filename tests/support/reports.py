"""What a failed cluster test's report shows: the components' logs and its pods' logs."""

from typing import Protocol


class LoggingCluster(Protocol):
    def log_tails(self, lines: int = 30) -> str: ...

    def pod_log_tails(self, namespace: str, lines: int = 20) -> str: ...


def failure_sections(cluster: LoggingCluster, namespace: str | None) -> list[tuple[str, str]]:
    """Report sections: every component's log tail, and the test namespace's container logs."""
    sections = [("cluster component logs (tail)", cluster.log_tails())]
    if namespace is not None:
        pods = cluster.pod_log_tails(namespace)
        sections.append((f"container logs in {namespace} (tail)", pods or "(none)"))
    return sections
