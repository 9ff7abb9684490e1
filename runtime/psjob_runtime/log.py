"""What a person reading `kubectl logs` should know: one line on stderr, prefixed `psjob:`.

Flushed at once, so that a line written just before a process dies is not lost in a buffer.
"""

import sys


def log(message: str) -> None:
    print(f"psjob: {message}", file=sys.stderr, flush=True)
