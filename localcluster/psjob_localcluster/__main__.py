"""``python -m psjob_localcluster dev [--kubelet]``: a local cluster in the foreground
(``make dev-cluster``, ``make dev-cluster NODE=kubelet``);
``python -m psjob_localcluster agent``: the node agent process the harness starts."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

from psjob_localcluster.agent.agent import AgentConfig, NodeAgent
from psjob_localcluster.agent.nodes import NodeSpec
from psjob_localcluster.cluster import DEFAULT_NODES, LocalCluster, start_cluster
from psjob_localcluster.kubelet_cluster import KubeletCluster, start_kubelet_cluster
from psjob_localcluster.node.prerequisites import missing_prerequisites
from psjob_localcluster.tools import ToolsMissingError


def _stop_on_signals() -> threading.Event:
    """SIGTERM and SIGINT (Ctrl-C) set the returned event instead of killing the process."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def run_agent(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = _stop_on_signals()
    agent = NodeAgent(
        AgentConfig(
            kubeconfig=args.kubeconfig,
            state_dir=args.state_dir,
            ca_file=args.ca_file,
            serving_cert=args.serving_cert,
            serving_key=args.serving_key,
            nodes=tuple(args.node or DEFAULT_NODES),
            no_run=args.no_run,
            loopback_block=args.loopback_block,
        )
    )
    agent.start()
    stop.wait()
    logging.info("stopping: ending every pod process")
    agent.stop()
    return 0


def _start(args: argparse.Namespace, root: Path) -> tuple[LocalCluster | KubeletCluster, str]:
    """The cluster of the chosen node kind, and its node names."""
    if args.kubelet:
        missing = missing_prerequisites()
        if missing:
            raise ToolsMissingError(f"the kubelet node needs {'; '.join(missing)}")
        kubelet = start_kubelet_cluster(root)
        return kubelet, kubelet.node.name
    local = start_cluster(root, tuple(args.node or DEFAULT_NODES), no_run=args.no_run)
    return local, ", ".join(n.name for n in local.nodes)


def run_dev(args: argparse.Namespace) -> int:
    stop = _stop_on_signals()
    root = Path(tempfile.mkdtemp(prefix="psjob-dev-cluster-"))
    started = time.monotonic()
    print(f"starting a local cluster in {root} ...", flush=True)
    try:
        cluster, nodes = _start(args, root)
    except ToolsMissingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        print(
            f"ready in {time.monotonic() - started:.1f} s: API server {cluster.server}, "
            f"nodes {nodes}, logs in {cluster.log_dir}"
        )
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        print(f"export PATH={cluster.tools.bin_dir}:$PATH   # the pinned kubectl and helm")
        print("Press Ctrl-C to stop everything.", flush=True)
        stop.wait()
    finally:
        print("stopping ...", flush=True)
        cluster.stop()
        print("stopped.", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m psjob_localcluster")
    commands = parser.add_subparsers(dest="command", required=True)
    node_help = "NAME[:RESOURCE=QTY,...], e.g. gpu-0:cpu=8,nvidia.com/gpu=2 (repeatable)"
    dev = commands.add_parser("dev", help="run a local cluster until Ctrl-C")
    dev.add_argument("--node", action="append", type=NodeSpec.parse, help=node_help)
    dev.add_argument("--no-run", action="store_true", help="mark pods Running, start nothing")
    dev.add_argument(
        "--kubelet",
        action="store_true",
        help="a real kubelet node (containerd, runc, CNI, CoreDNS) running the project's images",
    )
    agent = commands.add_parser("agent", help="the node agent (started by the harness)")
    agent.add_argument("--kubeconfig", type=Path, required=True)
    agent.add_argument("--state-dir", type=Path, required=True)
    agent.add_argument("--ca-file", type=Path, required=True)
    agent.add_argument("--serving-cert", type=Path, required=True)
    agent.add_argument("--serving-key", type=Path, required=True)
    agent.add_argument("--node", action="append", type=NodeSpec.parse, help=node_help)
    agent.add_argument("--no-run", action="store_true", help="mark pods Running, start nothing")
    agent.add_argument(
        "--loopback-block",
        type=int,
        default=None,
        help="B in the pods' 127.B.0.0/16 (default: random)",
    )
    args = parser.parse_args(argv)
    return run_agent(args) if args.command == "agent" else run_dev(args)


if __name__ == "__main__":
    sys.exit(main())
