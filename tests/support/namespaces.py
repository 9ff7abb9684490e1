"""Namespaces that tests create and leave behind."""

import re
import secrets

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from psjob_localcluster.waiting import wait_for

NOT_FOUND = 404


def namespace_name(test_name: str) -> str:
    """A unique namespace name that says which test made it."""
    base = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:50].strip("-")
    return f"{base or 'test'}-{secrets.token_hex(3)}"


def create_namespace(core: client.CoreV1Api, test_name: str) -> str:
    """A fresh namespace for ``test_name``, returned once its default ServiceAccount exists
    (pods are refused before that)."""
    name = namespace_name(test_name)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    def default_account_exists() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as error:
            if error.status == NOT_FOUND:
                return False
            raise
        return True

    wait_for(default_account_exists, f"the default ServiceAccount of namespace {name}")
    return name


def delete_namespace(core: client.CoreV1Api, name: str) -> None:
    """Start deleting a namespace without waiting; one already gone is fine."""
    try:
        core.delete_namespace(name)
    except ApiException as error:
        if error.status != NOT_FOUND:
            raise
