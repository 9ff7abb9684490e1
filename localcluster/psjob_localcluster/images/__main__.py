"""``python -m psjob_localcluster.images``: build or reuse every node image, then list them."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

from psjob_localcluster.build import BuildError
from psjob_localcluster.images.aptsources import NoMirrorError
from psjob_localcluster.images.base import DebootstrapError
from psjob_localcluster.images.buildah import BuildahError
from psjob_localcluster.images.context import DockerfileError
from psjob_localcluster.images.node_images import default_cache, ensure_node_images
from psjob_localcluster.images.prerequisites import missing_prerequisites


def disk_usage(path: str) -> str:
    """``du -sh``: counts overlay layers' hard links once, unlike summing file sizes."""
    if shutil.which("du") is None:
        return "?"
    done = subprocess.run(["du", "-sh", path], capture_output=True, text=True, check=False)
    return done.stdout.split()[0] if done.returncode == 0 and done.stdout else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.parse_args(argv)
    missing = missing_prerequisites()
    if missing:
        print(f"[node-images] cannot build here, missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        images = ensure_node_images()
    except (BuildError, BuildahError, DebootstrapError, DockerfileError, NoMirrorError) as error:
        print(f"[node-images] error: {error}", file=sys.stderr)
        return 1
    for image in images.all():
        state = "reused" if image.reused else "built "
        print(
            f"[node-images] {state} {image.name:<8} {image.reference:<40} "
            f"{image.archive_bytes / 2**20:9.0f} MiB {image.seconds:7.1f} s  {image.archive}"
        )
    cache = default_cache()
    print(
        f"[node-images] done in {time.monotonic() - started:.1f} s; archives "
        f"{disk_usage(str(cache.folder / 'archives'))}, buildah storage "
        f"{disk_usage(str(cache.folder / 'storage'))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
