"""`python -m psjob_runtime server`: the command of every server pod (no user code).

`python -m psjob_runtime export CHECKPOINT_DIR OUT`: a trained model for serving (docs/serving.md).
"""

import argparse
import os
import sys
from pathlib import Path

from psjob_runtime.contract import Role, read_context
from psjob_runtime.errors import ContractError, ExitCode, install_exit_hook
from psjob_runtime.export import ExportRequest, export
from psjob_runtime.export_source import ExportError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m psjob_runtime",
        description="Run a psjob role. Workers run user code that calls psjob_runtime.init().",
    )
    roles = parser.add_subparsers(dest="role", required=True, metavar="{server,export}")
    roles.add_parser("server", help="the role to run: server")
    _add_export(roles.add_parser("export", help="export a checkpoint for serving"))
    args = parser.parse_args(argv)
    if args.role == "export":
        _export(args)
        return
    # Imported here: an export needs neither the server nor the distributed stack it loads.
    from psjob_runtime.server import serve

    install_exit_hook()
    ctx = read_context()
    if ctx.role is not Role.SERVER:
        raise ContractError(
            "PSJOB_ROLE=worker but this is the server command: workers run the user's training "
            "code (for example python -m psjob_runtime.examples.digits)"
        )
    serve(ctx)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: gloo's threads may still hold connections to workers that
    # have already exited, and a clean run must not turn into a hang at the very end.
    os._exit(ExitCode.SUCCESS)


def _add_export(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write the newest usable checkpoint under CHECKPOINT_DIR to OUT as plain torch files: "
        "the dense parameters and each table's ids and rows (docs/serving.md)."
    )
    parser.add_argument("checkpoint_dir", type=Path, metavar="CHECKPOINT_DIR")
    parser.add_argument("out", type=Path, metavar="OUT", help="a new or empty folder")
    parser.add_argument(
        "--since",
        type=Path,
        metavar="PREVIOUS_EXPORT",
        help="write only the table rows changed since this export (and the dense parameters)",
    )
    parser.add_argument(
        "--model",
        metavar="MODULE:FACTORY",
        help="a function that builds the trained model: names the dense parameters (model.pt "
        "as a state_dict); without it dense.pt holds the flat vector",
    )
    parser.add_argument(
        "--owner",
        metavar="NAMESPACE/NAME",
        help="export only this job's checkpoints (default: the newest of any job)",
    )
    parser.add_argument("--replace", action="store_true", help="replace an earlier export at OUT")


def _export(args: argparse.Namespace) -> None:
    request = ExportRequest(
        checkpoint_dir=args.checkpoint_dir,
        out=args.out,
        since=args.since,
        model=args.model,
        owner=args.owner,
        replace=args.replace,
    )
    try:
        manifest = export(request)
    except ExportError as error:
        print(f"psjob export: {error}", file=sys.stderr)
        sys.exit(int(error.exit_code))
    rows = ", ".join(
        f"table {t.table}: {t.rows} rows, {t.evicted} evicted" for t in manifest.tables
    )
    since = f" since step {manifest.since}" if manifest.since is not None else ""
    print(
        f"exported step {manifest.step}{since} of job {manifest.owner} to {args.out} "
        f"({manifest.kind}; {manifest.dense.elements} dense elements in {manifest.dense.file}"
        f"{'; ' + rows if rows else ''})"
    )


if __name__ == "__main__":
    main()
