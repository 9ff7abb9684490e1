"""Which exit codes restart a job and which fail it, per restartPolicy."""

import pytest
from psjob_operator.models import ReplicaSpec


@pytest.mark.parametrize(
    ("spec", "exit_code", "retryable"),
    [
        ({}, 1, True),  # OnFailure restarts on any failure
        ({"restartPolicy": "Never"}, 137, False),
        ({"restartPolicy": "ExitCode"}, 1, False),  # a bug in user code
        ({"restartPolicy": "ExitCode"}, 78, False),  # bad configuration
        ({"restartPolicy": "ExitCode"}, 75, True),  # the runtime's retryable code
        ({"restartPolicy": "ExitCode"}, 137, True),  # SIGKILL, e.g. OOM
        ({"restartPolicy": "ExitCode"}, 143, True),  # SIGTERM, e.g. a drained node
        ({"restartPolicy": "ExitCode", "retryableExitCodes": [3]}, 3, True),
        ({"restartPolicy": "ExitCode", "retryableExitCodes": [3]}, 137, False),
    ],
)
def test_exit_code_rules(spec: dict[str, object], exit_code: int, retryable: bool) -> None:
    assert ReplicaSpec.model_validate(spec).is_retryable(exit_code) is retryable
