"""Kubernetes resource quantities ("500m", "4Gi", 2), checked offline as the CRD schema does.

Kubernetes' own quantity syntax allows a sign; a resource amount cannot be negative, so the
pattern here (and in the CRD) leaves the minus out.
"""

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY = re.compile(QUANTITY_PATTERN)


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a quantity cannot be negative (got {value})")
        return value
    if not _QUANTITY.match(value):
        raise ValueError(
            f"{value!r} is not a Kubernetes quantity: use a number with an optional suffix "
            "such as 500m, 2, 1.5, 512Mi or 4Gi"
        )
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]

BASE_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage"})


def is_extended_resource(name: str) -> bool:
    """Extended resources (GPUs and other device-plugin resources) may not be overcommitted.

    Kubernetes therefore requires them in `limits`; requests alone are refused.
    """
    return name not in BASE_RESOURCES and not name.startswith("hugepages-")
