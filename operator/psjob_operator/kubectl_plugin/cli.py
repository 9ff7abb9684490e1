"""`kubectl psjob status|logs NAME`: the plugin's command line and its loop (the thin shell).

kubectl hands a plugin every argument after its name and none of its own flags, so the plugin
reads the kubeconfig itself: KUBECONFIG or ~/.kube/config, `--kubeconfig`, `--context`, and
`-n/--namespace` (else the context's namespace, else `default`), as kubectl does.
"""

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO

from kubernetes import client, config
from kubernetes.client import ApiException
from urllib3.exceptions import HTTPError

from psjob_operator.kubectl_plugin.chart import ASCII_BLOCKS, BLOCKS
from psjob_operator.kubectl_plugin.cluster import api_message, list_pods, read_job
from psjob_operator.kubectl_plugin.log_lines import interleave, source
from psjob_operator.kubectl_plugin.pod_logs import Target, follow_all, read_all
from psjob_operator.kubectl_plugin.status_view import Reading, record, render_status
from psjob_operator.kubectl_plugin.terminal import CLEAR_SCREEN, Style
from psjob_operator.models import Role
from psjob_operator.observe import pod_view

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
FINISHED_PHASES = ("Succeeded", "Failed")
INTERRUPTED = 130


class PluginError(Exception):
    """A problem to report in one line, exit code 1."""


def _name(text: str) -> str:
    if not _NAME.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Kubernetes object name")
    return text


def _positive(kind: type[int] | type[float]) -> "argparse._ActionType":
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
        return value

    return parse


def _connection_flags(parser: argparse.ArgumentParser, default: object) -> None:
    """Accepted before and after the command: `-n team status x` and `status x -n team`."""
    parser.add_argument("--kubeconfig", default=default, help="kubeconfig file (else KUBECONFIG)")
    parser.add_argument("--context", default=default, help="kubeconfig context to use")
    parser.add_argument("-n", "--namespace", default=default, help="the job's namespace")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl psjob", description="See a PSJob's status, progress and logs."
    )
    _connection_flags(parser, None)
    commands = parser.add_subparsers(dest="command", required=True)

    status = commands.add_parser("status", help="phase, conditions, replicas and progress of a job")
    status.add_argument("name", type=_name, help="the PSJob")
    status.add_argument(
        "-w", "--watch", action="store_true", help="redraw until the job ends, with a chart"
    )
    status.add_argument(
        "--interval", type=_positive(float), default=5.0, help="seconds between readings (5)"
    )
    _connection_flags(status, argparse.SUPPRESS)

    logs = commands.add_parser("logs", help="the job's pod logs, prefixed like the launcher's")
    logs.add_argument("name", type=_name, help="the PSJob")
    logs.add_argument("-f", "--follow", action="store_true", help="follow every pod's log")
    logs.add_argument("--role", choices=[r.value for r in Role], help="only this role's pods")
    logs.add_argument("--tail", type=_positive(int), help="the last N lines of each pod")
    logs.add_argument(
        "--max-log-requests",
        type=_positive(int),
        default=50,
        help="most pods to follow at once (50), as kubectl's flag of that name",
    )
    _connection_flags(logs, argparse.SUPPRESS)
    return parser


def connect(args: argparse.Namespace) -> tuple[client.ApiClient, str]:
    """An API client for the chosen kubeconfig context, and the namespace to look in."""
    try:
        contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=args.kubeconfig
        )
        chosen = next((c for c in contexts if c["name"] == args.context), None) or active
        if args.context and chosen["name"] != args.context:
            raise PluginError(f"no context {args.context!r} in the kubeconfig")
        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=args.kubeconfig,
            context=args.context,
            client_configuration=configuration,
        )
    except (config.ConfigException, OSError) as error:
        raise PluginError(f"cannot read the kubeconfig: {error}") from None
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, 64)
    namespace = args.namespace or (chosen.get("context") or {}).get("namespace") or "default"
    return client.ApiClient(configuration), namespace


def _job(api: client.ApiClient, namespace: str, name: str) -> dict[str, object]:
    job = read_job(api, namespace, name)
    if job is None:
        raise PluginError(f'psjob "{name}" not found in namespace "{namespace}"')
    return job


def _glyphs(out: IO[str]) -> str:
    try:
        BLOCKS.encode(getattr(out, "encoding", None) or "ascii")
    except (LookupError, UnicodeEncodeError):
        return ASCII_BLOCKS
    return BLOCKS


def cmd_status(args: argparse.Namespace, api: client.ApiClient, namespace: str) -> int:
    out = sys.stdout
    live = out.isatty()
    style = Style(enabled=live and not os.environ.get("NO_COLOR"))
    history: tuple[Reading, ...] = ()
    first = True
    while True:
        job = _job(api, namespace, args.name)
        pods = list_pods(api, namespace, args.name)
        status = job.get("status")
        progress = status.get("progress") if isinstance(status, dict) else None
        history = record(history, Reading.of(progress))
        page = render_status(job, pods, history, datetime.now(UTC), style, _glyphs(out))
        if args.watch and live:
            out.write(CLEAR_SCREEN)
        elif not first:
            out.write("\n")
        out.write(page)
        out.flush()
        first = False
        phase = status.get("phase") if isinstance(status, dict) else None
        if not args.watch or phase in FINISHED_PHASES:
            return 0
        time.sleep(args.interval)


def cmd_logs(args: argparse.Namespace, api: client.ApiClient, namespace: str) -> int:
    _job(api, namespace, args.name)
    role = Role(args.role) if args.role else None
    views = [v for v in map(pod_view, list_pods(api, namespace, args.name, role)) if v]
    views.sort(key=lambda v: (v.role != Role.SERVER, v.index))
    targets = [Target(v.name, source(v.role, v.index)) for v in views]
    if not targets:
        print(f'psjob "{args.name}" has no pods in namespace "{namespace}"', file=sys.stderr)
        return 0
    if args.follow:
        if len(targets) > args.max_log_requests:
            raise PluginError(
                f"{len(targets)} pods to follow, more than --max-log-requests="
                f"{args.max_log_requests}: raise it, or choose pods with --role"
            )
        follow_all(api, namespace, targets, args.tail, _print_line)
        return 0
    logs = read_all(api, namespace, targets, args.tail)
    for log in logs:
        if log.problem:
            print(f"[{log.name}] ({log.problem})", file=sys.stderr)
    for line in interleave(logs):
        _print_line(line)
    return 0


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        api, namespace = connect(args)
        with api:
            command = cmd_status if args.command == "status" else cmd_logs
            return command(args, api, namespace)
    except PluginError as error:
        print(f"kubectl-psjob: {error}", file=sys.stderr)
        return 1
    except ApiException as error:
        print(f"kubectl-psjob: the API server refused: {api_message(error)}", file=sys.stderr)
        return 1
    except HTTPError as error:
        print(f"kubectl-psjob: cannot reach the API server: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # an answer that is not JSON, or too long
        print(f"kubectl-psjob: unexpected answer from the API server: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # The reader left (`| head`): stop quietly, without Python's error at its last flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
