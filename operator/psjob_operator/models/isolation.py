"""spec.networkPolicy: whether the job's pods accept connections from outside the job."""

from pydantic import Field

from psjob_operator.models.base import ApiModel

IMMUTABLE_NETWORK_POLICY = (
    "spec.networkPolicy.enabled cannot change on an existing job: the operator creates the "
    "job's NetworkPolicy with its first pods. To open a running job, delete its NetworkPolicy "
    "(kubectl delete networkpolicy JOB); to add allowed peers, create a NetworkPolicy of your "
    "own that selects the job's pods (docs/operator.md, Network isolation)"
)

NETWORK_POLICY_UNCHANGED = (
    "(has(self.networkPolicy) && has(self.networkPolicy.enabled) ? "
    "self.networkPolicy.enabled : true) == "
    "(has(oldSelf.networkPolicy) && has(oldSelf.networkPolicy.enabled) ? "
    "oldSelf.networkPolicy.enabled : true)"
)
"""A CEL transition rule on the spec: the field may be absent (true) on either side."""


class NetworkPolicySpec(ApiModel):
    enabled: bool = Field(
        True,
        description="True: the operator creates a NetworkPolicy owned by the job that lets in "
        "only the job's own pods, and on the servers' progress port the operator and the "
        "scrapers its installation names. False: the job's pods accept any connection the "
        "cluster allows. An operator started with --network-policy=off creates none either "
        "way. Fixed once the job exists.",
    )
