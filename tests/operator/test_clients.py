"""The operator's HTTP clients against real servers on loopback (async-only module).

validators_client against a small aiohttp validator; leadership.Elector and
kubeapi.Client against the embedded API server (two electors: one leader at a
time, the standby takes over when the lease expires).
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pot import keys, signing
from pot.operator import kubeapi, leadership, validators_client

from .conftest import serve


@pytest.fixture
async def validator() -> AsyncIterator[str]:
    async def status(_: web.Request) -> web.Response:
        return web.json_response({"view": 2, "primary": 1, "ready": True})

    async def register(request: web.Request) -> web.Response:
        doc = await request.json()
        if "signature" in doc:  # echoes who signed, so the test can check it
            miners = doc.get("miners", [])
            signer = signing.registration_signer(
                doc["signature"], doc["id"], doc["spec"], miners, doc["uid"]
            )
            return web.json_response(
                {"id": doc["id"], "signer": signer, "miners": miners, "uid": doc["uid"]},
                status=202,
            )
        if doc["id"].endswith("/bad"):
            return web.json_response(
                {"error": "unknown dataset", "field": "spec.dataset"}, status=400
            )
        return web.json_response({"id": doc["id"], "status": "Registered"}, status=202)

    async def task(request: web.Request) -> web.Response:
        if request.match_info["name"] == "known":
            return web.json_response({"id": "ns/known", "progress": {"step": 3}})
        return web.json_response({"error": "unknown"}, status=404)

    app = web.Application()
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/tasks", register)
    app.router.add_get("/v1/tasks/{ns}/{name}", task)
    async with serve(app) as base:
        yield base


async def test_validator_client_outcomes(validator: str) -> None:
    client = validators_client.Client(timeout=2)
    dead = "http://127.0.0.1:1"
    try:
        assert (await client.status(validator)) == {"view": 2, "primary": 1, "ready": True}
        assert await client.status(dead) is None
        # The first replica is down: the next one answers.
        reply = await client.register([dead, validator], "ns/ok", {"x": 1}, uid="u-1")
        assert reply["status"] == "Registered"
        with pytest.raises(
            validators_client.Rejected, match=r"spec\.dataset: unknown dataset"
        ) as exc:
            await client.register([validator], "ns/bad", {}, uid="u-1")
        assert exc.value.field == "spec.dataset"
        with pytest.raises(validators_client.Unavailable):
            await client.register([dead], "ns/ok", {}, uid="u-1")
        with pytest.raises(validators_client.Unavailable, match="no validator replica"):
            await client.task([], "ns/known")
        assert (await client.task([validator], "ns/known"))["progress"] == {"step": 3}  # type: ignore[index]
        assert await client.task([validator], "ns/unknown") is None
    finally:
        await client.close()


@pytest.fixture
async def apiserver(tmp_path: Path) -> AsyncIterator[str]:
    from pot.localcluster import apiserver as server_module

    srv = server_module.ApiServer(tmp_path / "state")
    port = await srv.start()
    yield f"http://127.0.0.1:{port}"
    await srv.stop()


def _info(url: str) -> Any:
    return types.SimpleNamespace(
        server=url, token=None, scheme=None, insecure=None, ca_path=None, ca_data=None,
        certificate_path=None, certificate_data=None, private_key_path=None, private_key_data=None,
    )  # fmt: skip


async def test_kube_client_create_is_idempotent_and_errors_are_wrapped(apiserver: str) -> None:
    kube = kubeapi.Client()
    kube.configure(_info(apiserver))
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "default"},
        "data": {"a": "1"},
    }
    try:
        assert (await kube.create(cm, "configmaps")) is not None
        assert (await kube.create(cm, "configmaps")) is None  # 409 AlreadyExists: fine
        patched = await kube.apply({**cm, "data": {"a": "2"}}, "configmaps")
        assert patched is not None and patched["data"] == {"a": "2"}
        with pytest.raises(kubeapi.NotFound):
            await kube.get("v1", "configmaps", "default", "missing")
        assert await kube.delete("v1", "configmaps", "default", "c", uid="not-its-uid") is False
        assert await kube.delete("v1", "configmaps", "default", "c") is True
        assert await kube.delete("v1", "configmaps", "default", "c") is False
        assert kube.requests["POST configmaps"] == 3  # two creates and the apply's create
    finally:
        await kube.close()
    dead = kubeapi.Client()
    dead.configure(_info("http://127.0.0.1:1"))
    with pytest.raises(kubeapi.errors.ClusterError, match="unreachable"):
        await dead.get("v1", "configmaps", "default", "c")
    await dead.close()


async def test_usage_watch_sees_only_pods_that_hold_a_node(apiserver: str) -> None:
    """usage_watching's selector on the embedded API server: a pending pod is never
    sent, a bound one is, and one that finishes leaves the selection as DELETED."""
    from pot.operator import usage_watching

    kube = kubeapi.Client()
    kube.configure(_info(apiserver))

    def pod(name: str, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busy"}], **spec},
        }

    try:
        await kube.create(pod("early", nodeName="rig-0"), "pods")
        listed = await kube.request(
            "GET", usage_watching.PODS, params={"fieldSelector": usage_watching.SELECTOR}
        )
        assert [p["metadata"]["name"] for p in listed["items"]] == ["early"]
        params = {
            "fieldSelector": usage_watching.SELECTOR,
            "resourceVersion": listed["metadata"]["resourceVersion"],
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "10",
        }
        seen: list[tuple[str, str]] = []

        async def follow() -> None:
            async for kind, obj in kube.watch(usage_watching.PODS, params):
                seen.append((kind, obj["metadata"].get("name", "")))
                if kind == "DELETED":
                    return

        job = asyncio.create_task(follow())
        await asyncio.sleep(0.2)
        await kube.create(pod("pending"), "pods")
        await kube.create(pod("bound", nodeName="rig-1"), "pods")
        await kube.patch(
            "v1", "pods", "default", "bound", {"status": {"phase": "Succeeded"}}, sub="status"
        )
        await asyncio.wait_for(job, 5)
        assert [s for s in seen if s[0] != "BOOKMARK"] == [("ADDED", "bound"), ("DELETED", "bound")]
        with pytest.raises(kubeapi.ApiError, match="field label not supported"):
            async for _ in kube.watch(usage_watching.PODS, {"fieldSelector": "spec.nope=x"}):
                pass
    finally:
        await kube.close()


async def test_one_leader_at_a_time(apiserver: str) -> None:
    clients = [kubeapi.Client(), kubeapi.Client()]
    for c in clients:
        c.configure(_info(apiserver))
    a, b = (
        leadership.Elector(c, namespace="default", name="pot-operator", identity=who, duration=1.0)
        for c, who in zip(clients, ("a", "b"), strict=True)
    )
    try:
        assert await a.try_acquire() is True
        assert await b.try_acquire() is False  # held and fresh
        lost: list[str] = []
        keeper = asyncio.create_task(a.keep(lambda: lost.append("a")))
        await asyncio.sleep(1.5)  # a renews: b still cannot take it
        assert await b.try_acquire() is False and not lost
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await asyncio.sleep(1.2)  # a stopped renewing: the lease expires
        await asyncio.wait_for(b.acquire(), 5)
        # a learns it lost the lease at its next renewal and steps down.
        await asyncio.wait_for(a.keep(lambda: lost.append("a")), 5)
        assert lost == ["a"]
        await b.release()
        assert await a.try_acquire() is True  # released: taken at once
    finally:
        for c in clients:
            await c.close()


async def test_registrations_are_signed_with_the_operators_key(validator: str) -> None:
    key = keys.generate()
    client = validators_client.Client(timeout=2, signer=key)
    try:
        miners = [keys.generate().address, keys.generate().address]
        spec = {"model": {"name": "m"}}
        reply = await client.register([validator], "ns/ok", spec, miners, uid="u-7")
        # The signature covers the uid sent: the validators' replays derive the run seed from it.
        assert reply["signer"] == key.address and reply["miners"] == miners
        assert reply["uid"] == "u-7"
        assert key.address in repr(client.signer) and "account" not in repr(client.signer)
    finally:
        await client.close()
