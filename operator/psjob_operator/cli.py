"""The `psjob` command line: CRD generation, offline validation, rendering, and the operator."""

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from psjob_operator import yamlio
from psjob_operator.crd import crd_yaml
from psjob_operator.isolation import PEERS_FLAG, PeersError, parse_peers
from psjob_operator.pod_policy import PodPolicy
from psjob_operator.render import render_all
from psjob_operator.validation import InvalidManifestError, InvalidManifestsError, load_psjobs


def _read(path: str) -> str:
    return sys.stdin.read() if path == "-" else Path(path).read_text()


def _cmd_crd(args: argparse.Namespace) -> int:
    sys.stdout.write(crd_yaml())
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        try:
            jobs = load_psjobs(_read(path), path)
        except (InvalidManifestsError, InvalidManifestError) as exc:
            for problem in getattr(exc, "problems", [exc]):
                print(f"{problem.name}: invalid", file=sys.stderr)
                for error in problem.errors:
                    print(f"  {error}", file=sys.stderr)
            status = 1
            continue
        for job in jobs:
            print(f"{path}: psjob/{job.metadata.name} is valid")
    return status


def _cmd_render(args: argparse.Namespace) -> int:
    try:
        jobs = load_psjobs(_read(args.file), args.file)
    except (InvalidManifestsError, InvalidManifestError) as exc:
        print(exc, file=sys.stderr)
        return 1
    manifests = [m for job in jobs for m in render_all(job, attempt=args.restart_count)]
    sys.stdout.write(yamlio.dump_all(manifests))
    return 0


def _cmd_operator(args: argparse.Namespace) -> int:
    # Imported here: kopf and the handlers are only needed by the operator itself.
    from psjob_operator import logs, runner

    logs.configure(args.log_format, args.verbose)
    options = runner.OperatorOptions(
        namespaces=args.namespace or [],
        http_port=args.http_port,
        leader_election_namespace=args.leader_election_namespace,
        leader_election_id=args.leader_election_id,
        pod_policy=PodPolicy(args.pod_policy),
        kueue=args.kueue,
        progress_interval=args.progress_interval,
        network_policy=args.network_policy == "on",
        network_peers=args.network_policy_peers,
    )
    return asyncio.run(runner.run(options))


def _peers(text: str) -> tuple[dict[str, object], ...]:
    try:
        return parse_peers(text)
    except PeersError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    value = float(text)
    if not (value >= 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="psjob", description="Parameter-server training jobs on Kubernetes."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    crd = commands.add_parser("crd", help="print the PSJob CustomResourceDefinition")
    crd.set_defaults(func=_cmd_crd)

    validate = commands.add_parser(
        "validate", help="check PSJob manifests offline, naming every bad field"
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="manifest file, or - for stdin")
    validate.set_defaults(func=_cmd_validate)

    render = commands.add_parser(
        "render", help="print the Services and Pods the operator would create, as YAML"
    )
    render.add_argument("file", metavar="FILE", help="manifest file, or - for stdin")
    render.add_argument(
        "--restart-count", type=int, default=0, help="render the pods of this job restart"
    )
    render.set_defaults(func=_cmd_render)

    operator = commands.add_parser("operator", help="run the operator (kopf) against the cluster")
    operator.add_argument(
        "--namespace",
        action="append",
        metavar="NS",
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    operator.add_argument(
        "--http-port", type=int, default=8080, help="port of /healthz and /metrics (8080)"
    )
    operator.add_argument(
        "--leader-election-namespace",
        metavar="NS",
        help="namespace of the leader Lease (default: $POD_NAMESPACE; no election when unset)",
    )
    operator.add_argument(
        "--leader-election-id", default="psjob-operator", help="name of the leader Lease"
    )
    operator.add_argument(
        "--pod-policy",
        choices=[policy.value for policy in PodPolicy],
        default=PodPolicy.UNRESTRICTED.value,
        help="restricted: refuse to create pods whose template asks for host namespaces, "
        "privileged containers, added capabilities, host ports, hostPath volumes or another "
        "service account; the job fails naming the field (default: unrestricted)",
    )
    operator.add_argument(
        "--kueue",
        action="store_true",
        help="queue the jobs labelled kueue.x-k8s.io/queue-name through Kueue: create their "
        "Workload and no pod until Kueue admits it (docs/kueue.md; needs Kueue's CRDs)",
    )
    operator.add_argument(
        "--progress-interval",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="read each running job's progress from its server 0 this often and write it to "
        "status.progress (default 10; 0: never)",
    )
    operator.add_argument(
        "--network-policy",
        choices=["on", "off"],
        default="on",
        help="on: give every job a NetworkPolicy that lets in only its own pods and, on the "
        "servers' progress port, --network-policy-peers; a job can turn its own off "
        "(spec.networkPolicy.enabled). off: create none (default: on)",
    )
    operator.add_argument(
        PEERS_FLAG,
        type=_peers,
        default=(),
        metavar="JSON",
        help="who besides the job's pods may reach the servers' progress port (/progress, "
        "/metrics): a JSON list of NetworkPolicyPeers, e.g. the operator's own pods and "
        "Prometheus's namespace; an operator outside the cluster names its address as an "
        "ipBlock (default: nobody)",
    )
    operator.add_argument("--log-format", choices=["plain", "json"], default="plain")
    operator.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    operator.set_defaults(func=_cmd_operator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
