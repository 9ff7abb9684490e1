"""Conditions as Kubernetes tooling expects them (kubectl wait, kstatus, Argo CD), pure."""

from datetime import datetime

from psjob_operator.models import Condition, ConditionType


def set_condition(
    conditions: list[Condition],
    kind: ConditionType,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Conditions with `kind` set; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.type == kind.value), None)
    changed_at = (
        now if previous is None or previous.status != value else (previous.last_transition_time)
    )
    updated = Condition(
        type=kind.value,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=changed_at,
        observed_generation=generation,
    )
    return [c for c in conditions if c.type != kind.value] + [updated]


def is_true(conditions: list[Condition], kind: ConditionType) -> bool:
    return any(c.type == kind.value and c.status == "True" for c in conditions)
