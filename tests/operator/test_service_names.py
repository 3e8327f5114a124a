"""A TrainingTask's gang Service is named after the task, and a ValidatorSet's client
Service after the set: a task and a set of one name in one namespace want the same Service.
The task used to take the 409 as "mine already" and its trainers rendezvoused through the
set's Service (the embedded API server, the operator's real client)."""

from __future__ import annotations

from typing import Any

from pot.operator import builders_validators, kubeapi, task_reconciler
from tests.operator.test_clients import _info, apiserver  # noqa: F401 (fixture)


def _task(uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "pot.dev/v1alpha1",
        "kind": "TrainingTask",
        "metadata": {"name": "x", "namespace": "default", "uid": uid},
    }


async def test_a_service_held_by_another_object_is_named_and_an_old_tasks_is_awaited(
    apiserver: str,  # noqa: F811 (the fixture)
) -> None:
    kube = kubeapi.Client()
    kube.configure(_info(apiserver))

    async def uid(name: str) -> str:
        # The garbage collector removes a Service whose owners' uids name no object: give
        # each owner a live uid (it checks the uid only; the code under test reads the kind).
        cm = {"apiVersion": "v1", "kind": "ConfigMap"}
        cm["metadata"] = {"name": name, "namespace": "default"}
        created = await kube.create(cm, "configmaps")
        assert created is not None
        return str(created["metadata"]["uid"])

    try:
        u1, u2, set_uid = await uid("task-1"), await uid("task-2"), await uid("set")
        # No Service yet: created, the task's own.
        assert await task_reconciler._service_taken(kube, _task(u1)) is None
        # Its own on the next pass.
        assert await task_reconciler._service_taken(kube, _task(u1)) is None
        # A re-created task of the name while the old one's Service awaits collection.
        assert await task_reconciler._service_taken(kube, _task(u2)) == ""
        await kube.delete("v1", "services", "default", "x")
        # A ValidatorSet named x holds the name: refused, naming it.
        vset = {"apiVersion": "pot.dev/v1alpha1", "kind": "ValidatorSet"}
        vset["metadata"] = {"name": "x", "namespace": "default", "uid": set_uid}
        assert await kube.create(builders_validators.build_client_service_spec(vset), "services")
        why = await task_reconciler._service_taken(kube, _task(u2))
        assert why is not None and 'belongs to ValidatorSet "x"' in why
        assert 'Service "x" exists in namespace "default"' in why
    finally:
        await kube.close()
