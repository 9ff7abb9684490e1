"""Namespaces that tests create and leave behind."""

from kubernetes import client
from kubernetes.client.exceptions import ApiException

NOT_FOUND = 404


def delete_namespace(core: client.CoreV1Api, name: str) -> None:
    """Start deleting a namespace without waiting; one already gone is fine."""
    try:
        core.delete_namespace(name)
    except ApiException as error:
        if error.status != NOT_FOUND:
            raise
