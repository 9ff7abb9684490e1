"""The environment contract stays the operator's: one rule, as CEL for admission and as Python for
`psjob validate`, with one message.

Both are built from `contract.CONTRACT_ENV`, so a variable added to the contract is refused in a
replica's `env` and in its template's main container at once. The message is fixed text: a CEL
messageExpression naming the offending variable is priced beyond the API server's budget.
"""

from collections.abc import Iterable

from pydantic.config import JsonDict

from psjob_operator.contract import CONTRACT_ENV, MAIN_CONTAINER

_CEL_NAMES = "[" + ", ".join(f"'{name}'" for name in CONTRACT_ENV) + "]"
REPLICA_ENV = "env"
TEMPLATE_ENV = f"env of the {MAIN_CONTAINER} container"


def sets_contract(names: Iterable[str]) -> bool:
    return any(name in CONTRACT_ENV for name in names)


def refusal(where: str) -> str:
    """The message of both checks: where the variable was set, which ones are refused, the fix."""
    return (
        f"{where} may not set a psjob contract variable ({', '.join(CONTRACT_ENV)}): the "
        f"operator sets them in the {MAIN_CONTAINER} container; use another name or "
        "spec.training.config"
    )


def cel_rule(entries: str, where: str, guard: str = "") -> JsonDict:
    """A CRD validation rule refusing contract names in the CEL list `entries`.

    `guard` is a CEL condition that, when true, exempts the object (a container other than the
    main one).
    """
    refused = f"{entries}.all(e, !(e.name in {_CEL_NAMES}))"
    return {
        "rule": f"{guard} || {refused}" if guard else refused,
        "message": refusal(where),
    }
