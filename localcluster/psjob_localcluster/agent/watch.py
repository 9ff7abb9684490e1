"""List-then-watch loops that survive expired resource versions and dropped connections."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from psjob_localcluster.kube import watch_stream

log = logging.getLogger("localcluster.agent")
Handler = Callable[[str, dict[str, Any]], None]
"""(event type: ADDED, MODIFIED or DELETED; the raw object as the API returns it)."""


def list_raw(list_function: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    """A list call's JSON, without the client's model conversion."""
    response = list_function(_preload_content=False, **kwargs)
    try:
        return dict(json.loads(response.data))
    finally:
        response.release_conn()


def watch_forever(
    list_function: Callable[..., Any], handle: Handler, stop: threading.Event, **kwargs: Any
) -> None:
    """Deliver every object as ADDED, then every change, until ``stop`` is set; relists after
    an expired resource version (410) or an error."""
    while not stop.is_set():
        try:
            listing = list_raw(list_function, **kwargs)
            for item in listing.get("items") or []:
                handle("ADDED", item)
            version = listing["metadata"]["resourceVersion"]
            while not stop.is_set():
                stream = watch_stream(
                    list_function,
                    resource_version=version,
                    timeout_seconds=30,
                    allow_watch_bookmarks=True,
                    deserialize=False,
                    **kwargs,
                )
                for event in stream:
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        handle(event["type"], obj)
                    if stop.is_set():
                        return
        except KeyError:
            # the client's deserialize=False path fails this way on an ERROR event (an expired
            # resource version): relist at once, as for a 410
            continue
        except ApiException as error:
            if error.status != 410:
                log.warning("watch %s: %s %s", list_function.__name__, error.status, error.reason)
                time.sleep(1.0)
        except Exception:
            log.exception("watch %s failed; relisting", list_function.__name__)
            time.sleep(1.0)
