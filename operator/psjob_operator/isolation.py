"""Who may connect to a job's pods: the peers of the job's NetworkPolicy (render.py renders it).

The PS protocol authenticates peers with the job's Secret (docs/security.md), but a pod that
cannot even connect cannot probe a server's parser or exhaust its connections. So every job gets
a policy owned by it (garbage-collected with it) that selects its pods and admits:

- any port, from the job's own pods (the servers and workers talk to each other);
- the servers' progress port (/progress, /metrics), from the peers the operator's installation
  names: the operator itself and the scrapers (`--network-policy-peers`, the chart's values).

Egress is left alone: workers read data and write logs wherever their users point them. Other
policies that select the same pods add to this one (NetworkPolicies are allow-lists that union),
which is how a user lets in more.
"""

import ipaddress
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import Field, TypeAdapter, ValidationError, field_validator

from psjob_operator.models.base import ApiModel

Manifest = dict[str, Any]

PEERS_FLAG = "--network-policy-peers"


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class SelectorRequirement(ApiModel):
    key: str = Field(min_length=1)
    operator: SelectorOperator
    values: list[str] = Field(default_factory=list)


class LabelSelector(ApiModel):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[SelectorRequirement] = Field(default_factory=list)


class IpBlock(ApiModel):
    cidr: str
    except_: list[str] = Field(default_factory=list, alias="except")

    @field_validator("cidr")
    @classmethod
    def _network(cls, value: str) -> str:
        ipaddress.ip_network(value, strict=False)
        return value


class NetworkPeer(ApiModel):
    """One `from` entry of a NetworkPolicy rule (networking.k8s.io/v1 NetworkPolicyPeer)."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IpBlock | None = None


_PEERS = TypeAdapter(list[NetworkPeer])


class PeersError(ValueError):
    """The peers flag does not hold a list of NetworkPolicyPeers; the message says where."""


def parse_peers(text: str) -> tuple[Manifest, ...]:
    """The JSON list of `--network-policy-peers`, checked, as the API server will get it."""
    try:
        peers = _PEERS.validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise PeersError(
            f"not a JSON list of NetworkPolicyPeers (podSelector, "
            f"namespaceSelector, ipBlock) at [{where}]: {first['msg']}; for example "
            f'\'[{{"namespaceSelector": {{"matchLabels": {{"kubernetes.io/metadata.name": '
            f'"monitoring"}}}}}}]\''
        ) from None
    return tuple(
        json.loads(peer.model_dump_json(by_alias=True, exclude_defaults=True)) for peer in peers
    )


@dataclass(frozen=True)
class NetworkIsolation:
    """The operator's setting: whether jobs get a NetworkPolicy, and whom it lets in."""

    enabled: bool = True
    peers: tuple[Manifest, ...] = ()


ISOLATED_FROM_ALL = NetworkIsolation()
"""The default: every job gets a policy, and nobody outside the job reaches its pods."""
