"""hack/kind-e2e.sh cannot run here (no Docker engine), so it is linted and its steps checked."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "kind-e2e.sh"


def test_kind_script_passes_shellcheck() -> None:
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "shellcheck"), "--severity=style", str(SCRIPT)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout


def test_kind_script_takes_the_users_path_in_order() -> None:
    """Cluster, images built and loaded, chart installed, the example waited for Succeeded."""
    text = SCRIPT.read_text()
    steps = [
        "hack/kind-cluster.sh",
        "make images",
        "kind load docker-image",
        "helm upgrade --install psjob charts/psjob-operator",
        'kubectl apply -f "$JOB_MANIFEST"',
        "kubectl wait --for=condition=Succeeded",
    ]
    positions = [text.find(step) for step in steps]
    assert -1 not in positions, dict(zip(steps, positions, strict=True))
    assert positions == sorted(positions)
    assert (ROOT / "examples" / "digits.yaml").is_file()


def test_kind_script_fails_clearly_without_docker(tmp_path: Path) -> None:
    """As on this machine: no engine (or no kind) gives one line saying what is missing."""
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        capture_output=True, text=True, timeout=60,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", "VERSION": "0.1.0"},
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("kind-e2e: "), done.stderr
    assert "is not on PATH" in done.stderr or "Docker engine is not running" in done.stderr
