"""The pod sandbox image ``localhost/psjob/pause:3.10``: pause.c, statically linked, FROM scratch.

The kubelet node's containerd starts one per pod (``sandbox_image`` in its CRI config). It runs as
65535, as Kubernetes' own pause image does.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from psjob_localcluster.images.buildah import Buildah, buildah_version
from psjob_localcluster.images.keys import JsonValue, file_digest
from psjob_localcluster.images.scratch import commit_binary_image

SOURCE = Path(__file__).resolve().parent / "pause.c"
REFERENCE = "localhost/psjob/pause:3.10"
CFLAGS = ("-static", "-O2", "-s", "-Wall", "-Wextra", "-Werror")
USER = "65535:65535"


class CompilerMissingError(RuntimeError):
    """No C compiler to build the pause program."""


def compiler() -> str:
    exe = shutil.which("gcc") or shutil.which("cc")
    if exe is None:
        raise CompilerMissingError(
            "no C compiler (gcc) for the pause image: run `make system-deps`"
        )
    return exe


@dataclass(frozen=True)
class PauseImage:
    """The recipe (see archives.Recipe) of the pause image."""

    name: str = "pause"
    reference: str = REFERENCE

    def inputs(self) -> dict[str, JsonValue]:
        version = subprocess.run(
            [compiler(), "--version"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[0]
        return {
            "source": file_digest(SOURCE),
            "cflags": list(CFLAGS),
            "compiler": version,
            "user": USER,
            "buildah": buildah_version(),
        }

    def build(self, buildah: Buildah, workdir: Path) -> None:
        binary = workdir / "pause"
        subprocess.run([compiler(), *CFLAGS, "-o", str(binary), str(SOURCE)], check=True)
        commit_binary_image(
            buildah, binary, entrypoint="/pause", user=USER, reference=self.reference
        )
