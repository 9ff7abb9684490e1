"""Names shared with the world outside the operator: the API group, labels and the env contract.

The runtime (psjob_runtime) keeps its own copy of the environment variable names on purpose:
the runtime image must not depend on the operator package. Both follow docs/api.md (the
environment contract); tests/unit/test_env_contract.py checks that the two copies agree.
"""

GROUP = "psjob.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PSJob"
PLURAL = "psjobs"
SINGULAR = "psjob"
SHORT_NAME = "psj"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB_NAME = f"{GROUP}/job-name"
LABEL_ROLE = f"{GROUP}/role"
LABEL_REPLICA_INDEX = f"{GROUP}/replica-index"
MANAGER = "psjob-operator"

MAIN_CONTAINER = "psjob"
"""The container that runs the role's process; a template may add others beside it."""

ENV_JOB_NAME = "PSJOB_NAME"
ENV_NAMESPACE = "PSJOB_NAMESPACE"
ENV_ROLE = "PSJOB_ROLE"
ENV_REPLICA_INDEX = "PSJOB_REPLICA_INDEX"
ENV_NUM_SERVERS = "PSJOB_NUM_SERVERS"
ENV_NUM_WORKERS = "PSJOB_NUM_WORKERS"
ENV_SERVER_ADDRS = "PSJOB_SERVER_ADDRS"
ENV_MASTER_ADDR = "MASTER_ADDR"
ENV_MASTER_PORT = "MASTER_PORT"
ENV_WORLD_SIZE = "WORLD_SIZE"
ENV_RANK = "RANK"
ENV_TRAINING = "PSJOB_TRAINING"
ENV_RESTART_COUNT = "PSJOB_RESTART_COUNT"
ENV_SECRET = "PSJOB_SECRET"
ENV_PROGRESS_PORT = "PSJOB_PROGRESS_PORT"
SECRET_KEY = "secret"
"""The key of the job's Secret that holds PSJOB_SECRET."""

CONTRACT_ENV = (
    ENV_JOB_NAME,
    ENV_NAMESPACE,
    ENV_ROLE,
    ENV_REPLICA_INDEX,
    ENV_NUM_SERVERS,
    ENV_NUM_WORKERS,
    ENV_SERVER_ADDRS,
    ENV_MASTER_ADDR,
    ENV_MASTER_PORT,
    ENV_WORLD_SIZE,
    ENV_RANK,
    ENV_TRAINING,
    ENV_RESTART_COUNT,
    ENV_SECRET,
    ENV_PROGRESS_PORT,
)
"""Variables the operator owns in every pod; a user's `env` may not redefine them."""

EXIT_RETRYABLE = 75
"""The runtime's exit code for a retryable failure: a peer lost or a timeout (EX_TEMPFAIL)."""

DEFAULT_SERVER_PORT = 23456
DEFAULT_SERVER_COMMAND = ("python", "-m", "psjob_runtime", "server")
RENDEZVOUS_PORT_NAME = "rendezvous"

DEFAULT_PROGRESS_PORT = 9400
"""Where every server serves the job's progress (PSJOB_PROGRESS_PORT); server 0 answers."""
PROGRESS_PORT_NAME = "progress"
"""The server pods' container port the operator reads `PROGRESS_PATH` from."""
PROGRESS_PATH = "/progress"

DNS_LABEL_MAX = 63
ROLE_INFIX_LENGTH = len("-worker-")
"""`-server-` and `-worker-` have the same length, so one rule bounds both roles' pod names."""
