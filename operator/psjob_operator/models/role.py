"""The two roles of a parameter-server job, shared by the spec and the status."""

from enum import StrEnum


class Role(StrEnum):
    SERVER = "server"
    WORKER = "worker"
