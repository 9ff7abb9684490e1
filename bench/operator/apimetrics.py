"""API requests counted by the API server itself (`apiserver_request_total` on /metrics).

The counter has no label for the client, so requests are told apart by what they do: only the
operator creates pods and services, posts core/v1 Events and patches PSJob status in these
benchmarks (the scheduler binds pods and posts events.k8s.io Events, the node agent patches pod
status, kubectl gets and creates the PSJob). `operator_writes` sums the operator's kinds.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from kubernetes import client

RequestKind = tuple[str, str, str, str]
"""(verb, group, resource, subresource)"""

_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

OPERATOR_WRITES: frozenset[RequestKind] = frozenset(
    {
        ("POST", "", "pods", ""),
        ("POST", "", "services", ""),
        ("POST", "", "events", ""),
        ("PATCH", "psjob.dev", "psjobs", "status"),
        ("DELETE", "", "pods", ""),
    }
)


def request_counts(api: client.ApiClient) -> Counter[RequestKind]:
    """The API server's request counters now, summed over response codes and scopes."""
    response: Any = api.call_api("GET", f"{api.configuration.host}/metrics")
    return parse_request_counts(response.read().decode())


def parse_request_counts(text: str) -> Counter[RequestKind]:
    """`apiserver_request_total` samples of a Prometheus text page, by request kind."""
    counts: Counter[RequestKind] = Counter()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        kind = (
            labels.get("verb", ""),
            labels.get("group", ""),
            labels.get("resource", ""),
            labels.get("subresource", ""),
        )
        counts[kind] += int(float(match["value"]))
    return counts


def delta(before: Counter[RequestKind], after: Counter[RequestKind]) -> Counter[RequestKind]:
    return Counter({k: after[k] - before[k] for k in after if after[k] > before[k]})


def summary(requests: Counter[RequestKind], jobs: int) -> dict[str, Any]:
    """Per-job figures and the breakdown (largest first) for the report."""
    operator = sum(n for kind, n in requests.items() if kind in OPERATOR_WRITES)
    resource_requests = {k: n for k, n in requests.items() if k[2]}
    return {
        "total": sum(resource_requests.values()),
        "total_per_job": sum(resource_requests.values()) / jobs,
        "operator_writes": operator,
        "operator_writes_per_job": operator / jobs,
        "by_kind": [
            {"verb": k[0], "group": k[1], "resource": k[2], "subresource": k[3], "count": n}
            for k, n in sorted(resource_requests.items(), key=lambda item: -item[1])
        ],
    }
