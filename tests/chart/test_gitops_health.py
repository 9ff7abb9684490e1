"""GitOps health: what Argo CD (the Lua check) and Flux (kstatus) say about a PSJob in each phase.

Both judge PSJobs that the operator's own reconcile decision produced (see conftest.py): the Lua
script runs in a real Lua 5.1 interpreter, the version Argo CD's gopher-lua implements, and the
kstatus verdicts come from sigs.k8s.io/cli-utils itself, built from its Go module.
"""

import json
import subprocess
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "examples" / "gitops" / "argocd"
HEALTH_LUA = ARGOCD / "psjob-health.lua"
HEALTH_KEY = "resource.customizations.health.psjob.dev_PSJob"

# phase fixture -> (Argo CD health, kstatus status)
EXPECTED = {
    "new": ("Progressing", "InProgress"),
    "pending": ("Progressing", "InProgress"),
    "created": ("Progressing", "InProgress"),
    "running-not-ready": ("Progressing", "InProgress"),
    "running": ("Healthy", "Current"),
    "recovering": ("Progressing", "InProgress"),
    "restarting": ("Progressing", "InProgress"),
    "succeeded": ("Healthy", "Current"),
    "failed": ("Degraded", "Failed"),
    "suspended": ("Suspended", "InProgress"),
    "spec-changed": ("Progressing", "InProgress"),
}


def argocd_health(script: str, obj: dict[str, Any]) -> dict[str, str]:
    """Run the health script as Argo CD does: `obj` is a global table, the script returns hs."""
    runtime = lua51.LuaRuntime()
    # Argo CD hands the object over as Lua tables decoded from its JSON; do the same.
    runtime.globals().obj = _to_lua(runtime, obj)
    result = runtime.execute(script)
    return {key: result[key] for key in ("status", "message")}


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


@pytest.mark.parametrize("phase", EXPECTED)
def test_argocd_health_of_every_phase(phase: str, psjob_phases: dict[str, dict[str, Any]]) -> None:
    health = argocd_health(HEALTH_LUA.read_text(), psjob_phases[phase])
    assert health["status"] == EXPECTED[phase][0], health
    assert health["message"], "Argo CD shows the message in its UI: it must say something"


def test_argocd_degraded_message_names_the_failed_pod(
    psjob_phases: dict[str, dict[str, Any]],
) -> None:
    health = argocd_health(HEALTH_LUA.read_text(), psjob_phases["failed"])
    assert "digits-worker-1" in health["message"] and "code 1" in health["message"]


def test_argocd_config_map_ships_the_tested_script() -> None:
    config_map = yaml.safe_load((ARGOCD / "argocd-cm-psjob-health.yaml").read_text())
    assert config_map["metadata"]["name"] == "argocd-cm"
    assert config_map["data"][HEALTH_KEY] == HEALTH_LUA.read_text(), (
        "argocd-cm-psjob-health.yaml embeds another script than psjob-health.lua: copy it over"
    )


def test_argocd_shows_which_pod_a_job_recovers_in_place(
    psjob_phases: dict[str, dict[str, Any]],
) -> None:
    """A lost pod recreated alone leaves the job running: Progressing, never Degraded."""
    recovering = psjob_phases["recovering"]
    assert recovering["status"]["phase"] == "Running"
    assert recovering["status"]["restartCount"] == 0
    health = argocd_health(HEALTH_LUA.read_text(), recovering)
    assert health["message"].startswith("recovering in place: worker-0 (incarnation 1")


@pytest.fixture(scope="module")
def kstatus_verdicts(
    kstatus_binary: Path, psjob_phases: dict[str, dict[str, Any]]
) -> dict[str, dict[str, str]]:
    names = list(psjob_phases)
    stream = yaml.safe_dump_all([psjob_phases[name] for name in names])
    done = subprocess.run(
        [str(kstatus_binary)], input=stream, capture_output=True, text=True, check=True, timeout=60
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return dict(zip(names, lines, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("phase", EXPECTED)
def test_kstatus_of_every_phase(phase: str, kstatus_verdicts: dict[str, dict[str, str]]) -> None:
    """What Flux's health checks and `flux/kpt wait` conclude.

    A PSJob the operator has not yet seen ("new") reads with the status the CRD defaults,
    observedGeneration 0, so kstatus waits for the operator instead of calling it Current.
    Every later state is judged from observedGeneration, Ready and Stalled.
    """
    assert kstatus_verdicts[phase]["status"] == EXPECTED[phase][1], kstatus_verdicts[phase]
