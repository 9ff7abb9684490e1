"""The node images, built for real (or reused from the cache) and checked in their archives.

The first run on a machine builds everything (the runtime image downloads several GB of torch
and CUDA wheels); every later run reuses the archives by their input keys, which a test below
checks, so this module costs seconds when warm. A throw-away containerd (Debian's 1.6) imports
the small images and runs them as the kubelet node's containerd will.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psjob_localcluster.images import (
    BuiltImage,
    Ctr,
    NodeImages,
    ensure_node_images,
    import_images,
    missing_prerequisites,
)
from psjob_localcluster.images.coredns import NET_BIND_SERVICE_XATTR
from psjob_localcluster.images.mounts import mount_points_under, unmount_under

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.timeout(5400),  # a cold build downloads several GB of wheels
    pytest.mark.xdist_group("node-images"),  # one pytest-xdist worker builds, none waits idle
]


def require(missing: list[str]) -> None:
    """Skip naming what is missing; under CI=true that is a failure instead."""
    if missing:
        message = f"the node images need {'; '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def images() -> NodeImages:
    require(missing_prerequisites())
    return ensure_node_images()


def read_archive(image: BuiltImage) -> tuple[dict[str, Any], dict[str, Any]]:
    """The docker-archive's manifest entry and the image config it points to."""
    with tarfile.open(image.archive) as archive:
        (entry,) = json.load(_member(archive, "manifest.json"))
        config = json.load(_member(archive, entry["Config"]))
    return entry, config


def layer_files(image: BuiltImage) -> dict[str, tarfile.TarInfo]:
    """The image's file system as its layers stack up (whiteouts delete), from the tar headers
    alone: the layers' data is skipped, so even the multi-GB runtime archive lists in seconds."""
    files: dict[str, tarfile.TarInfo] = {}
    with tarfile.open(image.archive) as archive:
        (entry,) = json.load(_member(archive, "manifest.json"))
        for layer in entry["Layers"]:
            with tarfile.open(fileobj=_member(archive, layer)) as inner:
                for info in inner:
                    path = info.name.removeprefix("./")
                    folder, _, name = path.rpartition("/")
                    if name == ".wh..wh..opq":
                        _delete_below(files, folder)
                    elif name.startswith(".wh."):
                        deleted = f"{folder}/{name[4:]}" if folder else name[4:]
                        files.pop(deleted, None)
                        _delete_below(files, deleted)
                    else:
                        files[path] = info
    return files


def _delete_below(files: dict[str, tarfile.TarInfo], folder: str) -> None:
    for path in [p for p in files if p.startswith(f"{folder}/")]:
        del files[path]


def _member(archive: tarfile.TarFile, name: str) -> Any:
    handle = archive.extractfile(name)
    assert handle is not None, f"{name} is not a file in the archive"
    return handle


def test_every_archive_carries_its_reference_and_image_id(images: NodeImages) -> None:
    for image in images.all():
        entry, config = read_archive(image)
        assert entry["RepoTags"] == [image.reference], image.name
        assert entry["Config"].removesuffix(".json") == image.image_id, image.name
        assert config["os"] == "linux"


def test_a_second_run_reuses_every_image(images: NodeImages) -> None:
    started = time.monotonic()
    again = ensure_node_images()
    elapsed = time.monotonic() - started
    assert [(i.name, i.key, i.reused) for i in again.all()] == [
        (i.name, i.key, True) for i in images.all()
    ]
    assert elapsed < 60, f"a warm run took {elapsed:.0f} s: something was rebuilt or re-hashed"


def test_the_operator_image_runs_the_operator_as_non_root_without_torch(
    images: NodeImages,
) -> None:
    _, config = read_archive(images.operator)
    assert config["config"]["User"] == "65532:65532"
    assert config["config"]["Entrypoint"] == ["psjob", "operator"]
    files = layer_files(images.operator)
    assert any(p.endswith("-packages/psjob_operator/__init__.py") for p in files)
    assert any(p.endswith("-packages/kopf/__init__.py") for p in files)
    torch = [p for p in files if "-packages/torch/" in p or "-packages/nvidia/" in p]
    assert not torch, f"the operator image holds torch: {torch[:3]}"


def test_the_runtime_image_holds_torch_and_the_runtime(images: NodeImages) -> None:
    _, config = read_archive(images.runtime)
    assert config["config"]["User"] == "65532:65532"
    files = layer_files(images.runtime)
    # Debian's pip installs into /usr/local/lib/python3.11/dist-packages, not site-packages.
    assert any(p.endswith("-packages/torch/__init__.py") for p in files)
    assert any(p.endswith("-packages/psjob_runtime/__init__.py") for p in files)
    assert not [p for p in files if p.startswith("src/")], "the Dockerfile removes /src"
    assert files["home/psjob"].uid == 65532 and files["home/psjob"].gid == 65532


def test_the_base_image_lets_pip_install_into_the_system_python(images: NodeImages) -> None:
    _, config = read_archive(images.base)
    assert "LANG=C.UTF-8" in config["config"]["Env"]
    files = layer_files(images.base)
    assert {"usr/bin/python", "usr/bin/pip", "usr/sbin/useradd"} <= set(files)
    assert not [p for p in files if p.endswith("EXTERNALLY-MANAGED")]
    assert not [p for p in files if p.startswith("var/lib/apt/lists/") and files[p].isfile()]


def test_pause_and_coredns_are_one_static_binary_each(images: NodeImages) -> None:
    expected = ((images.pause, "pause", "65535:65535"), (images.coredns, "coredns", "65532:65532"))
    for image, binary, user in expected:
        _, config = read_archive(image)
        assert config["config"]["Entrypoint"] == [f"/{binary}"]
        assert config["config"]["User"] == user
        files = layer_files(image)
        assert [p for p, info in files.items() if info.isfile()] == [binary]
    capability = layer_files(images.coredns)["coredns"].pax_headers
    assert capability["SCHILY.xattr.security.capability"].encode("latin-1", "surrogateescape") == (
        NET_BIND_SERVICE_XATTR
    )


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Path]:
    """A throw-away containerd (the node's configuration, minus CNI); yields its socket."""
    require([f"{c} (make node-deps)" for c in ("containerd", "ctr", "runc") if not shutil.which(c)])
    config = tmp_path / "config.toml"
    config.write_text(
        f'version = 2\nroot = "{tmp_path}/root"\nstate = "{tmp_path}/state"\n'
        f'[grpc]\n  address = "{tmp_path}/containerd.sock"\n'
        '[plugins."io.containerd.grpc.v1.cri"]\n  restrict_oom_score_adj = true\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "overlayfs"\n'
    )
    log = (tmp_path / "containerd.log").open("w")
    process = subprocess.Popen(
        ["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    socket = tmp_path / "containerd.sock"
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert process.poll() is None, (tmp_path / "containerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "containerd did not create its socket in 30 s"
            time.sleep(0.1)
        yield socket
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        unmount_under(tmp_path)
        assert not mount_points_under(tmp_path)


def ctr(socket: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "--address", str(socket), "--namespace", "k8s.io", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_containerd_imports_the_images_once_and_runs_them(
    images: NodeImages, containerd: Path
) -> None:
    small = (images.pause, images.coredns, images.operator)
    assert import_images(Ctr(containerd), small) == list(small)
    assert import_images(Ctr(containerd), small) == [], "a second import must skip them all"

    probe = "import os, psjob_operator; print(os.getuid(), psjob_operator.__version__)"
    run = ctr(containerd, "run", "--rm", images.operator.reference, "op", "python", "-c", probe)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[0] == "65532"

    started = subprocess.Popen(
        ["ctr", "--address", str(containerd), "--namespace", "k8s.io", "run", "--rm",
         images.pause.reference, "pause"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "RUNNING" not in ctr(containerd, "tasks", "list").stdout:
            assert time.monotonic() < deadline and started.poll() is None, "pause did not start"
            time.sleep(0.2)
        assert ctr(containerd, "tasks", "kill", "--signal", "SIGTERM", "pause").returncode == 0
        assert started.wait(timeout=30) == 0, "pause must exit 0 on SIGTERM"
    finally:
        if started.poll() is None:
            ctr(containerd, "tasks", "kill", "--signal", "SIGKILL", "pause")
            started.wait(timeout=30)
