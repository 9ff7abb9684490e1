"""Where Kueue placed an admitted job: its flavors' node labels and tolerations, on each pod."""

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from psjob_operator.kueue.admission import Admission
from psjob_operator.models import Role

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Placement:
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[Manifest] = field(default_factory=list)


def placements(admission: Admission, flavors: Mapping[str, Manifest]) -> dict[Role, Placement]:
    """Each role's placement from the ResourceFlavors (by name) Kueue assigned to its pod set.

    As Kueue's job framework does: every assigned flavor's nodeLabels join the node selector
    and its tolerations are added, once per flavor.
    """
    placed = {}
    for role in Role:
        selector: dict[str, str] = {}
        tolerations: list[Manifest] = []
        for name in admission.flavors.get(role.value, []):
            flavor_spec = flavors[name].get("spec") or {}
            selector.update(flavor_spec.get("nodeLabels") or {})
            tolerations.extend(flavor_spec.get("tolerations") or [])
        placed[role] = Placement(selector, tolerations)
    return placed


def place_pod(pod: Manifest, placement: Placement | None) -> Manifest:
    """The pod with the placement added to what its template asked for; None: as it is."""
    if placement is None or (not placement.node_selector and not placement.tolerations):
        return pod
    placed = copy.deepcopy(pod)
    spec = placed["spec"]
    if placement.node_selector:
        spec["nodeSelector"] = {**spec.get("nodeSelector", {}), **placement.node_selector}
    if placement.tolerations:
        spec["tolerations"] = [*spec.get("tolerations", []), *placement.tolerations]
    return placed
