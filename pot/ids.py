"""Identifiers shared by the operator, validators, the contract and the CLI.

A task is named ``<namespace>/<name>`` everywhere off chain; on chain it is
``keccak256(utf8(name))`` so a submitter can escrow the pool before applying
the TrainingTask, knowing only its namespace and name.
"""

from __future__ import annotations

from eth_utils import keccak

from pot import errors


def task_key(namespace: str, name: str) -> str:
    """The off-chain task id."""
    return f"{namespace}/{name}"


def split_task_key(task: str) -> tuple[str, str]:
    """``(namespace, name)`` of a task id; ConfigError if malformed."""
    namespace, sep, name = task.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise errors.ConfigError(f"task id {task!r} is not <namespace>/<name>")
    return namespace, name


def chain_task_id(task: str) -> bytes:
    """The bytes32 the contract knows the task by."""
    split_task_key(task)
    return bytes(keccak(text=task))
