"""`python -m psjob_runtime server`: the command of every server pod (no user code)."""

import argparse
import os
import sys

from psjob_runtime.contract import Role, read_context
from psjob_runtime.errors import ContractError, ExitCode, install_exit_hook
from psjob_runtime.server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m psjob_runtime",
        description="Run a psjob role. Workers run user code that calls psjob_runtime.init().",
    )
    parser.add_argument("role", choices=["server"], help="the role to run: server")
    parser.parse_args(argv)
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


if __name__ == "__main__":
    main()
