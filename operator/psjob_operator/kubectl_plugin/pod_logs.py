"""Reading the job's pod logs: all at once to interleave, or followed by one thread per pod."""

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client import ApiException

from psjob_operator import contract
from psjob_operator.kubectl_plugin.cluster import (
    NOT_FOUND,
    READ_TIMEOUT,
    api_message,
    open_get,
    pod_path,
    read_pod,
)
from psjob_operator.kubectl_plugin.log_lines import LineSplitter, PodLog, prefixed

LOG_BYTES_MAX = 32 * 1024 * 1024
"""Bytes read of one pod's log when not following: use --tail for the end of a longer one."""
CHUNK = 65_536
RETRY_SECONDS = 2.0
"""How often a follower asks again for the log of a container that has not started yet."""
FETCHERS = 8
FINISHED = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Target:
    """A pod whose log to read, and the launcher's name for it (`worker-1`)."""

    pod: str
    source: str


def _open(
    api: client.ApiClient,
    namespace: str,
    target: Target,
    tail: int | None,
    follow: bool,
) -> Any:
    """The log stream of the pod's main container; timestamped unless followed."""
    query = {"container": contract.MAIN_CONTAINER}
    if tail is not None:
        query["tailLines"] = str(tail)
    if follow:
        query["follow"] = "true"
    else:
        query["timestamps"] = "true"
    # No read timeout when following: a log may stay quiet for as long as the training does.
    return open_get(
        api,
        f"{pod_path(namespace, target.pod)}/log",
        query,
        read_timeout=None if follow else READ_TIMEOUT,
    )


def _read(api: client.ApiClient, namespace: str, target: Target, tail: int | None) -> PodLog:
    splitter = LineSplitter()
    lines: list[str] = []
    try:
        response = _open(api, namespace, target, tail, follow=False)
    except ApiException as error:
        return PodLog(target.source, [], problem=api_message(error))
    read = 0
    try:
        for chunk in response.stream(CHUNK):
            read += len(chunk)
            lines += splitter.feed(chunk)
            if read >= LOG_BYTES_MAX:
                response.close()  # the rest stays unread: this connection cannot be reused
                return PodLog(target.source, lines, problem=f"log cut at {LOG_BYTES_MAX} bytes")
    finally:
        response.release_conn()
    return PodLog(target.source, lines + splitter.end())


def read_all(
    api: client.ApiClient, namespace: str, targets: Sequence[Target], tail: int | None
) -> list[PodLog]:
    """Each target's log, read a few at a time, in the targets' order."""
    with ThreadPoolExecutor(max_workers=FETCHERS) as pool:
        return list(pool.map(lambda t: _read(api, namespace, t, tail), targets))


def _finished(api: client.ApiClient, namespace: str, pod: str) -> bool:
    """Whether the pod is gone or ended: its log will never start then."""
    found = read_pod(api, namespace, pod)
    status = found.get("status") if found else None
    return not isinstance(status, dict) or status.get("phase") in FINISHED


def _follow(
    api: client.ApiClient,
    namespace: str,
    target: Target,
    tail: int | None,
    emit: Callable[[str], None],
    stop: threading.Event,
) -> None:
    """Emit the pod's lines until its container ends; wait while it has not started."""
    while not stop.is_set():
        try:
            response = _open(api, namespace, target, tail, follow=True)
        except ApiException as error:
            # 400: the container is waiting to start (or never will: the pod ended first).
            if error.status == NOT_FOUND or _finished(api, namespace, target.pod):
                emit(prefixed(target.source, f"(no log: {api_message(error)})"))
                return
            stop.wait(RETRY_SECONDS)
            continue
        splitter = LineSplitter()
        try:
            for chunk in response.stream(CHUNK):
                for line in splitter.feed(chunk):
                    emit(prefixed(target.source, line))
                if stop.is_set():
                    response.close()
                    return
            for line in splitter.end():
                emit(prefixed(target.source, line))
        finally:
            response.release_conn()
        return


def follow_all(
    api: client.ApiClient,
    namespace: str,
    targets: Sequence[Target],
    tail: int | None,
    write: Callable[[str], None],
) -> None:
    """Write every target's lines as they come until all logs end (Ctrl-C stops it sooner).

    One thread per pod reads; only this thread writes, so lines never mix mid-line.
    """
    lines: queue.Queue[str | None] = queue.Queue(maxsize=10_000)
    stop = threading.Event()

    def run(target: Target) -> None:
        try:
            _follow(api, namespace, target, tail, lines.put, stop)
        except Exception as error:  # one pod's failure must not stop the others
            lines.put(prefixed(target.source, f"(log stream failed: {error})"))
        finally:
            lines.put(None)

    threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            line = lines.get()
            if line is None:
                running -= 1
            else:
                write(line)
    finally:
        stop.set()
