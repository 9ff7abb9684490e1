"""Runtime tests import their helpers as tests.runtime.*, whichever way pytest was started."""

import sys
from pathlib import Path

import pytest
import torch

REPOSITORY = str(Path(__file__).resolve().parents[2])
if REPOSITORY not in sys.path:
    sys.path.insert(0, REPOSITORY)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """The reference computations share two cores with the jobs they check."""
    torch.set_num_threads(1)
