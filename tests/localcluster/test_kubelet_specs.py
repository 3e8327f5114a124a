"""Pure pod -> process translation: entrypoints, env valueFrom, $(VAR), volumes, hosts, status."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from pot.localcluster import kubelet_status, podhosts, podspecs

POD: dict[str, Any] = {
    "metadata": {
        "name": "vset-1",
        "namespace": "ns",
        "uid": "u1",
        "labels": {"app": "v"},
        "annotations": {"a": "b"},
    },
    "spec": {"nodeName": "gpu-rig-0", "hostname": "vset-1", "subdomain": "vset-peers"},
    "status": {"podIP": "10.200.0.7"},
}
SECRETS = {"keys": {"data": {"validator-1.key": base64.b64encode(b"0xabc").decode()}}}
CMS = {"cfg": {"data": {"peers.json": "{}", "mode": "fast"}}}


def _spec(
    container: dict[str, Any], volume_dirs: dict[str, str] | None = None
) -> podspecs.ProcessSpec:
    return podspecs.process_spec(
        POD,
        container,
        base_env={"PATH": "/venv/bin:/usr/bin"},
        volume_dirs=volume_dirs or {},
        configmaps=CMS,
        secrets=SECRETS,
        node_allocatable={"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "4"},
        venv_bin="/nonexistent-venv/bin",
    )


@pytest.mark.parametrize(
    ("image", "module"),
    [
        ("pot-validator", "pot.validator"),
        ("ghcr.io/acme/pot-trainer:0.1.0", "pot.trainer"),
        ("registry:5000/x/pot-operator@sha256:abc", "pot.operator"),
    ],
)
def test_project_images_map_to_their_modules(image: str, module: str) -> None:
    assert podspecs.entrypoint({"name": "c", "image": image, "args": ["--x"]}) == [
        "python",
        "-m",
        module,
        "--x",
    ]


def test_foreign_image_without_command_is_refused_clearly() -> None:
    with pytest.raises(podspecs.ContainerConfigError, match=r"'nginx:1\.27' has no command"):
        podspecs.entrypoint({"name": "web", "image": "nginx:1.27"})


def test_env_value_from_and_expansion() -> None:
    container = {
        "name": "c",
        "image": "pot-validator",
        "args": [
            "--replica-id",
            "$(ORDINAL)",
            "--ip",
            "$(POD_IP)",
            "--literal",
            "$$(ORDINAL)",
            "$(UNDEFINED)",
        ],
        "resources": {"limits": {"memory": "2Gi"}},
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "ORDINAL", "value": "1"},
            {
                "name": "MEM_MI",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
            {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {
                "name": "KEY",
                "valueFrom": {"secretKeyRef": {"name": "keys", "key": "validator-1.key"}},
            },
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "URL", "value": "http://$(NAME).vset-peers.$(NS):8080"},
        ],
    }
    spec = _spec(container)
    env = spec.env
    assert env["POD_IP"] == "10.200.0.7" and env["APP"] == "v" and env["KEY"] == "0xabc"
    assert env["MEM_MI"] == "2048" and env["CPUS"] == "32" and env["MODE"] == "fast"
    assert env["URL"] == "http://vset-1.vset-peers.ns:8080"
    assert spec.argv[-7:] == [
        "--replica-id",
        "1",
        "--ip",
        "10.200.0.7",
        "--literal",
        "$(ORDINAL)",
        "$(UNDEFINED)",
    ]


def test_missing_secret_key_is_a_config_error() -> None:
    container = {
        "name": "c",
        "command": ["x"],
        "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "nope"}}}],
    }
    with pytest.raises(podspecs.ContainerConfigError, match="couldn't find key nope"):
        _spec(container)


def test_python_and_torchrun_resolve_to_the_venv(tmp_path: Any) -> None:
    for name in ("python", "torchrun"):
        exe = tmp_path / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    assert podspecs.resolve_program(["torchrun", "-m", "x"], str(tmp_path)) == [
        str(tmp_path / "torchrun"),
        "-m",
        "x",
    ]
    assert podspecs.resolve_program(["python", "-V"], str(tmp_path))[0] == str(tmp_path / "python")


def test_configmap_and_secret_volume_files() -> None:
    files = podspecs.volume_files(
        {"name": "v", "secret": {"secretName": "keys", "defaultMode": 0o400}},
        POD,
        configmaps=CMS,
        secrets=SECRETS,
    )
    assert files == {"validator-1.key": (b"0xabc", 0o400)}
    files = podspecs.volume_files(
        {
            "name": "v",
            "configMap": {
                "name": "cfg",
                "items": [{"key": "peers.json", "path": "sub/peers.json"}],
            },
        },
        POD,
        configmaps=CMS,
        secrets=SECRETS,
    )
    assert files == {"sub/peers.json": (b"{}", 0o644)}
    assert (
        podspecs.volume_files({"name": "v", "emptyDir": {}}, POD, configmaps=CMS, secrets=SECRETS)
        is None
    )
    with pytest.raises(podspecs.ContainerConfigError, match='configmap "nope" not found'):
        podspecs.volume_files(
            {"name": "v", "configMap": {"name": "nope"}}, POD, configmaps=CMS, secrets=SECRETS
        )


def test_hosts_file_has_cluster_dns_names() -> None:
    endpoints = [
        {
            "metadata": {"name": "vset-peers", "namespace": "ns"},
            "subsets": [
                {
                    "addresses": [
                        {"ip": "10.200.0.6", "hostname": "vset-0"},
                        {"ip": "10.200.0.7", "hostname": "vset-1"},
                    ]
                }
            ],
        }
    ]
    text = podhosts.render(POD, "10.200.0.7", podhosts.service_records(endpoints))
    assert "10.200.0.7\tvset-1.vset-peers.ns.svc.cluster.local vset-1\n" in text
    line = next(x for x in text.splitlines() if x.startswith("10.200.0.6"))
    assert (
        "vset-0.vset-peers.ns.svc.cluster.local" in line.split()
        and "vset-peers.ns.svc.cluster.local" in line.split()
    )
    assert "vset-peers" in line.split()


def _c(kind: str, state: dict[str, Any], restarts: int = 0) -> kubelet_status.ContainerState:
    return kubelet_status.ContainerState(
        name=kind, image="i", kind=kind, state=state, restart_count=restarts
    )


@pytest.mark.parametrize(
    ("policy", "states", "phase"),
    [
        ("Always", [{"running": {}}], "Running"),
        ("Never", [{"terminated": {"exitCode": 0}}], "Succeeded"),
        ("Never", [{"terminated": {"exitCode": 2}}], "Failed"),
        ("Always", [{"terminated": {"exitCode": 2}}], "Running"),
        ("Always", [{"waiting": {"reason": "ContainerCreating"}}], "Pending"),
    ],
)
def test_phase(policy: str, states: list[dict[str, Any]], phase: str) -> None:
    assert kubelet_status.phase(policy, [_c("regular", s) for s in states], False) == phase


class _FakeApi:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.patched: list[dict[str, Any]] = []

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        return body

    async def patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patched.append(patch)
        return patch


def test_repeated_events_are_counted_not_duplicated(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from pot.localcluster import events

    api = _FakeApi()

    async def scenario() -> None:
        recorder = events.Recorder(api, "kubelet")  # type: ignore[arg-type]
        for _ in range(5):
            recorder.emit(POD, "Unhealthy", "Readiness probe failed", "Warning")
        monkeypatch.setattr(events, "UPDATE_EVERY", 0.0)
        recorder.emit(POD, "Unhealthy", "Readiness probe failed", "Warning")
        recorder.emit(POD, "Killing", "Stopping container c")
        await asyncio.gather(*recorder.pending)

    # A private loop: asyncio.run would reset the policy's loop under pytest-asyncio.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert [e["reason"] for e in api.created] == ["Unhealthy", "Killing"]
    assert api.patched
    assert api.patched[-1]["count"] == 6
