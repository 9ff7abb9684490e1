"""Build a container's environment the way the kubelet does.

Order and precedence follow the kubelet: ``envFrom`` sources first, then ``env`` entries in
order (later ones win), each ``value`` with ``$(VAR)`` expanded against the variables defined
before it (``$$`` escapes a dollar; an unknown reference stays as written). Downward-API
``fieldRef`` and ``resourceFieldRef`` values, ConfigMap and Secret keys are resolved here; a
missing non-optional reference is a ``ContainerConfigError``, which the agent reports as the
kubelet's ``CreateContainerConfigError`` waiting reason.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from kubernetes.client import V1Container, V1EnvFromSource, V1Pod, V1ResourceFieldSelector

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_LABEL_PATH = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
_SUFFIXES: dict[str, Decimal] = {
    **{s: Decimal(2) ** (10 * i) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), 1)},
    **{s: Decimal(10) ** (3 * i) for i, s in enumerate(("k", "M", "G", "T", "P", "E"), 1)},
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
}

Lookup = Callable[[str, str], Mapping[str, str] | None]
"""(namespace, name) -> the object's data, or None when the object does not exist."""


class ContainerConfigError(Exception):
    """A referenced ConfigMap, Secret or key is missing, or a field path is unsupported."""


@dataclass(frozen=True)
class PodFacts:
    """What the downward API can expose that is not in the pod object yet."""

    pod_ip: str
    host_ip: str
    node_allocatable: Mapping[str, str]


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity ("500m", "2Gi", "1e3") as a number."""
    match = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([A-Za-z]*)", text.strip())
    if match is None or (match.group(2) and match.group(2) not in _SUFFIXES):
        raise ContainerConfigError(f"invalid resource quantity {text!r}")
    return Decimal(match.group(1)) * _SUFFIXES.get(match.group(2), Decimal(1))


def expand(value: str, defined: Mapping[str, str]) -> str:
    """Kubelet's $(VAR) expansion: known references replaced, $$ -> $, others kept."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return defined.get(name, match.group(0))

    return _REFERENCE.sub(replace, value)


def _field_value(pod: V1Pod, path: str, facts: PodFacts) -> str:
    meta, spec = pod.metadata, pod.spec
    simple: dict[str, str | None] = {
        "metadata.name": meta.name if meta else None,
        "metadata.namespace": meta.namespace if meta else None,
        "metadata.uid": meta.uid if meta else None,
        "spec.nodeName": spec.node_name if spec else None,
        "spec.serviceAccountName": spec.service_account_name if spec else None,
        "status.podIP": facts.pod_ip,
        "status.podIPs": facts.pod_ip,
        "status.hostIP": facts.host_ip,
        "status.hostIPs": facts.host_ip,
    }
    if path in simple:
        return simple[path] or ""
    labelled = _LABEL_PATH.match(path)
    if labelled and meta is not None:
        source = meta.labels if labelled.group(1) == "labels" else meta.annotations
        return (source or {}).get(labelled.group(2), "")
    raise ContainerConfigError(f"fieldRef.fieldPath {path!r} is not supported by the local agent")


def _resource_value(
    container: V1Container, selector: V1ResourceFieldSelector, facts: PodFacts
) -> str:
    """limits.X / requests.X divided by the divisor, rounded up; a missing limit is the node's
    allocatable amount, as on a kubelet."""
    kind, _, resource = selector.resource.partition(".")
    resources = container.resources
    values = (resources.limits if kind == "limits" else resources.requests) if resources else None
    raw = (values or {}).get(resource)
    if raw is None:
        raw = facts.node_allocatable.get(resource, "0") if kind == "limits" else "0"
    divisor = parse_quantity(selector.divisor or "1")
    if divisor == 0:
        raise ContainerConfigError(f"resourceFieldRef divisor of {selector.resource} is zero")
    return str(math.ceil(parse_quantity(raw) / divisor))


def _secret_text(data: Mapping[str, str], key: str) -> str:
    return base64.b64decode(data[key]).decode()


def _env_from(
    namespace: str, source: V1EnvFromSource, config_maps: Lookup, secrets: Lookup
) -> dict[str, str]:
    """The variables of one ``envFrom`` entry (a whole ConfigMap or Secret, prefixed)."""
    prefix = source.prefix or ""
    if source.config_map_ref is not None:
        name, optional = source.config_map_ref.name, source.config_map_ref.optional
        data = config_maps(namespace, name or "")
        if data is not None:
            return {prefix + key: value for key, value in data.items()}
        kind = "configmap"
    elif source.secret_ref is not None:
        name, optional = source.secret_ref.name, source.secret_ref.optional
        data = secrets(namespace, name or "")
        if data is not None:
            return {prefix + key: _secret_text(data, key) for key in data}
        kind = "secret"
    else:
        return {}
    if optional:
        return {}
    raise ContainerConfigError(f'{kind} "{name}" not found')


def build_env(
    pod: V1Pod,
    container: V1Container,
    facts: PodFacts,
    *,
    config_maps: Lookup,
    secrets: Lookup,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of ``container``: ``base`` (kubelet-injected variables), then
    ``envFrom``, then ``env``. Secret data is base64 as the API returns it."""
    namespace = (pod.metadata.namespace if pod.metadata else None) or "default"
    env: dict[str, str] = dict(base or {})
    for source in container.env_from or []:
        env.update(_env_from(namespace, source, config_maps, secrets))
    for variable in container.env or []:
        value_from = variable.value_from
        if value_from is None:
            env[variable.name] = expand(variable.value or "", env)
        elif value_from.field_ref is not None:
            env[variable.name] = _field_value(pod, value_from.field_ref.field_path, facts)
        elif value_from.resource_field_ref is not None:
            env[variable.name] = _resource_value(container, value_from.resource_field_ref, facts)
        elif value_from.config_map_key_ref is not None or value_from.secret_key_ref is not None:
            is_map = value_from.config_map_key_ref is not None
            key_ref = value_from.config_map_key_ref if is_map else value_from.secret_key_ref
            assert key_ref is not None
            data = (config_maps if is_map else secrets)(namespace, key_ref.name or "")
            if data is None or key_ref.key not in data:
                if key_ref.optional:
                    continue
                kind = "configmap" if is_map else "secret"
                what = f'{kind} "{key_ref.name}"' + (
                    "" if data is None else f' key "{key_ref.key}"'
                )
                raise ContainerConfigError(f"{what} not found (env {variable.name})")
            env[variable.name] = data[key_ref.key] if is_map else _secret_text(data, key_ref.key)
        else:
            raise ContainerConfigError(f"env {variable.name}: unsupported valueFrom source")
    return env
