"""Identifiers shared by the operator, validators, the contract and the CLI.

A task is named ``<namespace>/<name>`` everywhere off chain; on chain it is
``keccak256(utf8(name))`` so a submitter can escrow the pool before applying
the TrainingTask, knowing only its namespace and name.
"""

from __future__ import annotations

import re

from eth_utils import keccak

from pot import errors

NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
"""A Kubernetes namespace: an RFC 1123 label."""
TASK_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
"""A TrainingTask name the operator runs: a DNS label starting with a letter (it names the
gang's Service; ``pot.operator.checks`` fails a task named otherwise)."""


def task_key(namespace: str, name: str) -> str:
    """The off-chain task id."""
    return f"{namespace}/{name}"


def split_task_key(task: str) -> tuple[str, str]:
    """``(namespace, name)`` of a task id; ConfigError if malformed."""
    namespace, sep, name = task.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise errors.ConfigError(f"task id {task!r} is not <namespace>/<name>")
    return namespace, name


def check_task_key(task: str) -> str:
    """``task`` if it can name a TrainingTask the operator runs; ConfigError saying why not.

    For ids a person types (``pot chain fund --task``): the chain takes any string, so a
    misspelt one (``ns/MLP_demo``) would escrow a pool for a task that can never exist."""
    namespace, name = split_task_key(task)
    if not NAMESPACE.match(namespace):
        raise errors.ConfigError(
            f"task id {task!r}: namespace {namespace!r} is not a Kubernetes namespace "
            "(lowercase letters, digits and '-', at most 63)"
        )
    if not TASK_NAME.match(name):
        raise errors.ConfigError(
            f"task id {task!r}: {name!r} is not a TrainingTask name (lowercase letters, "
            "digits and '-', starting with a letter, at most 63)"
        )
    return task


def chain_task_id(task: str) -> bytes:
    """The bytes32 the contract knows the task by."""
    split_task_key(task)
    return bytes(keccak(text=task))
