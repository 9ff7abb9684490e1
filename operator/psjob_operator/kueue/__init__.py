"""Queueing PSJobs with Kueue, pure: the Workload a queued job gets, and what Kueue answered.

Kueue manages only the kinds it has Go code for; any other controller has its jobs queued by
creating their Workload itself and following the contract Kueue's job framework follows for its
own kinds (the Spark Kubernetes operator does the same). That contract, in short:

- the Workload is owned by the job and holds one pod set per role, with its count and pod
  template, so Kueue computes the quota from the real requests;
- no pod exists until the Workload is admitted; the pods then get the node labels and
  tolerations of the flavors Kueue assigned;
- when Kueue evicts the Workload, the job's pods are stopped, and once none is left the job
  controller clears the quota reservation, so the Workload queues again;
- when the job finishes, the job controller marks the Workload Finished, which frees the quota.

The I/O half (reading and writing Workloads) lives in `psjob_operator.queueing`.
"""

from psjob_operator.kueue.admission import Admission, read_admission
from psjob_operator.kueue.placement import Placement, place_pod, placements
from psjob_operator.kueue.workload import (
    PRIORITY_LABEL,
    QUEUE_LABEL,
    finish_patch,
    queue_name,
    release_patch,
    render_workload,
    workload_name,
)

__all__ = [
    "PRIORITY_LABEL",
    "QUEUE_LABEL",
    "Admission",
    "Placement",
    "finish_patch",
    "place_pod",
    "placements",
    "queue_name",
    "read_admission",
    "release_patch",
    "render_workload",
    "workload_name",
]
