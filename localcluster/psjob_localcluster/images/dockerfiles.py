"""The project's own images, built from ``images/*/Dockerfile`` with ``buildah bud``.

The Dockerfiles are the ones users build with Docker; only the build arguments differ here:
``PYTHON_IMAGE`` names the locally bootstrapped base, and the runtime's ``TORCH_INDEX_URL`` is
empty so torch comes from pip's default index. ``--layers`` keeps each step's result in the
buildah store, so a change to ``runtime/`` reuses the multi-GB torch layer instead of downloading
it again. RUN steps use the host's network (the package downloads are their only traffic) and
see the host's CA bundle in place of the image's own, so that they trust what the machine trusts
(a TLS-inspecting proxy's CA, for one); the bundle is mounted for the build only, not copied in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from psjob_localcluster.images.archives import BuiltImage, ensure_in_store
from psjob_localcluster.images.buildah import Buildah, buildah_version
from psjob_localcluster.images.context import context_digest
from psjob_localcluster.images.keys import JsonValue

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
"""Debian's bundle path, on the host and in the base image alike."""


@dataclass(frozen=True)
class DockerfileImage:
    """The recipe (see archives.Recipe) of one ``images/<name>/Dockerfile`` build."""

    name: str
    reference: str
    context: Path
    base: BuiltImage
    build_args: dict[str, str] = field(default_factory=dict)

    @property
    def dockerfile(self) -> Path:
        return self.context / "images" / self.name / "Dockerfile"

    def all_build_args(self) -> dict[str, str]:
        return {"PYTHON_IMAGE": self.base.reference, **self.build_args}

    def inputs(self) -> dict[str, JsonValue]:
        text = self.dockerfile.read_text()
        return {
            "dockerfile": text,
            "context": context_digest(self.context, text),
            "build_args": dict(self.all_build_args()),
            "base": self.base.key,
            "buildah": buildah_version(),
        }

    def build(self, buildah: Buildah, workdir: Path) -> None:
        ensure_in_store(buildah, self.base)
        arguments = [f"--build-arg={k}={v}" for k, v in sorted(self.all_build_args().items())]
        if CA_BUNDLE.is_file():
            arguments.append(f"--volume={CA_BUNDLE}:{CA_BUNDLE}:ro")
        buildah.run(
            "bud",
            "--layers",
            "--force-rm",
            "--pull=never",
            "--network=host",
            f"--file={self.dockerfile}",
            f"--tag={self.reference}",
            *arguments,
            str(self.context),
            quiet=False,
        )
