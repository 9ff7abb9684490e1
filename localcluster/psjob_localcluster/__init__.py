"""A real Kubernetes control plane on loopback, plus a node agent that runs pods as processes.

``start_cluster`` / ``local_cluster`` (cluster.py) are the entry points; the pytest fixtures in
tests/e2e/conftest.py wrap them. See docs/cluster.md.
"""

from psjob_localcluster.agent.nodes import NodeSpec
from psjob_localcluster.cluster import DEFAULT_NODES, LocalCluster, local_cluster, start_cluster
from psjob_localcluster.tools import ToolsMissingError, require_tools

__all__ = [
    "DEFAULT_NODES",
    "LocalCluster",
    "NodeSpec",
    "ToolsMissingError",
    "local_cluster",
    "require_tools",
    "start_cluster",
]
