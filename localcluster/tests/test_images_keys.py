"""The node images' cache keys: every input counts, and nothing else does (no builds here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from psjob_localcluster.images import dockerfiles
from psjob_localcluster.images.aptsources import NoMirrorError, debian_mirror
from psjob_localcluster.images.archives import BuiltImage, recipe_key
from psjob_localcluster.images.context import DockerfileError, context_digest, copied_sources
from psjob_localcluster.images.dockerfiles import DockerfileImage
from psjob_localcluster.images.dockerignore import DockerIgnore, parse
from psjob_localcluster.images.node_images import REPOSITORY

DOCKERFILE = """\
FROM ${PYTHON_IMAGE} AS build
COPY requirements/app.lock /tmp/app.lock
COPY app/ /src/app/
FROM ${PYTHON_IMAGE}
COPY --from=build /opt /opt
"""
DOCKERIGNORE = "*\n!app/\n!requirements/\n**/__pycache__\n**/*.egg-info\n"


@pytest.fixture
def context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A build context like the repository's: images/app/Dockerfile, app/, requirements/."""
    monkeypatch.setattr(dockerfiles, "buildah_version", lambda: "buildah version 1.28.2")
    (tmp_path / "images" / "app").mkdir(parents=True)
    (tmp_path / "images" / "app" / "Dockerfile").write_text(DOCKERFILE)
    (tmp_path / ".dockerignore").write_text(DOCKERIGNORE)
    (tmp_path / "app" / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "app" / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (tmp_path / "app" / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (tmp_path / "app" / "app.egg-info").mkdir()
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "app.lock").write_text("kopf==1\n")
    (tmp_path / "requirements" / "other.lock").write_text("torch==2\n")
    (tmp_path / "README.md").write_text("not in any image\n")
    return tmp_path


def base_image(key: str = "base-key") -> BuiltImage:
    return BuiltImage(
        name="base",
        reference="localhost/psjob/python:3.11-bookworm",
        key=key,
        image_id="0" * 64,
        archive=Path("/nonexistent/base.tar"),
        reused=True,
        seconds=0.0,
    )


def key_of(context: Path, base: BuiltImage | None = None, **build_args: str) -> str:
    image = DockerfileImage("app", "example/app:1", context, base or base_image(), build_args)
    return recipe_key(image)


def test_the_key_is_stable_when_nothing_changes(context: Path) -> None:
    assert key_of(context) == key_of(context)


@pytest.mark.parametrize(
    "path",
    ["app/pkg/__init__.py", "requirements/app.lock", "images/app/Dockerfile"],
)
def test_changing_a_copied_file_or_the_dockerfile_changes_the_key(context: Path, path: str) -> None:
    before = key_of(context)
    with (context / path).open("a") as handle:
        handle.write("# changed\n")
    assert key_of(context) != before


def test_a_new_file_in_a_copied_folder_changes_the_key(context: Path) -> None:
    before = key_of(context)
    (context / "app" / "pkg" / "new.py").write_text("")
    assert key_of(context) != before


def test_an_executable_bit_changes_the_key(context: Path) -> None:
    before = key_of(context)
    (context / "app" / "pkg" / "__init__.py").chmod(0o755)
    assert key_of(context) != before


@pytest.mark.parametrize(
    "path",
    [
        "app/pkg/__pycache__/x.pyc",  # excluded by .dockerignore
        "app/app.egg-info/PKG-INFO",  # excluded by .dockerignore
        "requirements/other.lock",  # sent, but never copied
        "README.md",  # excluded and never copied
    ],
)
def test_files_the_build_never_copies_do_not_change_the_key(context: Path, path: str) -> None:
    before = key_of(context)
    (context / path).write_text("changed\n")
    assert key_of(context) == before


def test_a_build_argument_changes_the_key(context: Path) -> None:
    assert key_of(context, TORCH_INDEX_URL="") != key_of(context, TORCH_INDEX_URL="https://x")
    assert key_of(context, TORCH_INDEX_URL="") != key_of(context)


def test_the_base_image_key_changes_the_key(context: Path) -> None:
    assert key_of(context, base_image("one")) != key_of(context, base_image("two"))


def test_the_builder_version_changes_the_key(
    context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = key_of(context)
    monkeypatch.setattr(dockerfiles, "buildah_version", lambda: "buildah version 1.29.0")
    assert key_of(context) != before


def test_the_repository_images_depend_only_on_their_own_sources(tmp_path: Path) -> None:
    """A change to runtime/ must not rebuild the operator image, and the reverse."""
    copy = tmp_path / "repo"
    for folder in ("operator", "runtime", "requirements", "images"):
        shutil.copytree(REPOSITORY / folder, copy / folder)
    shutil.copy(REPOSITORY / ".dockerignore", copy / ".dockerignore")

    def digest(name: str) -> str:
        return context_digest(copy, (copy / "images" / name / "Dockerfile").read_text())

    operator, runtime = digest("operator"), digest("runtime")
    (copy / "runtime" / "psjob_runtime" / "__init__.py").write_text("# changed\n")
    assert digest("operator") == operator and digest("runtime") != runtime
    operator_init = copy / "operator" / "psjob_operator" / "__init__.py"
    operator_init.write_text(operator_init.read_text() + "# changed\n")
    assert digest("operator") != operator


def test_copy_sources_skip_other_stages_and_read_the_json_form() -> None:
    text = DOCKERFILE + 'COPY ["a.txt", "b/", "/dst/"]\nADD --chown=1:1 c /c\n'
    assert copied_sources(text) == ("requirements/app.lock", "app", "a.txt", "b", "c")


def test_a_source_that_cannot_be_keyed_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="VERSION"):
        copied_sources("COPY dist/app-${VERSION}.whl /tmp/\n")


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        ("*\n!app/\n", "app/x.py", False),
        ("*\n!app/\n", "tests/x.py", True),
        ("*\n!app/\n**/__pycache__\n", "app/a/b/__pycache__/x.pyc", True),
        ("**/*.egg-info\n", "app/pkg.egg-info/PKG-INFO", True),
        ("app/*.py\n", "app/x.py", True),
        ("app/*.py\n", "app/sub/x.py", False),  # * stays within one path element
        ("app/**/*.py\n", "app/sub/deep/x.py", True),
        ("/app\n", "app/x.py", True),  # leading slash: the context root
        ("app\n!app/keep.py\n", "app/keep.py", False),  # the last match wins
        ("!app/keep.py\napp\n", "app/keep.py", True),
        ("# comment\n\n", "x", False),
        ("app/[ab].py\n", "app/b.py", True),
        ("app/?.py\n", "app/ab.py", False),
    ],
)
def test_dockerignore_follows_dockers_matcher(patterns: str, path: str, excluded: bool) -> None:
    assert DockerIgnore(parse(patterns)).excludes(path) is excluded


def test_the_mirror_comes_from_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb-src\nURIs: http://src.invalid/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian/\nSuites: bookworm bookworm-updates\n"
    )
    assert debian_mirror("bookworm", tmp_path) == "http://mirror.invalid/debian"


def test_the_mirror_comes_from_a_one_line_sources_list(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://old.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.invalid/debian bookworm main\n"
    )
    assert debian_mirror("bookworm", tmp_path) == "http://mirror.invalid/debian"


def test_no_mirror_for_the_suite_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://mirror.invalid/debian trixie main\n")
    with pytest.raises(NoMirrorError, match="bookworm"):
        debian_mirror("bookworm", tmp_path)
