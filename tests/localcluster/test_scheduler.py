"""Pure scheduler: filters, messages worded like kube-scheduler, requests, gates."""

from __future__ import annotations

from typing import Any

import pytest

from pot.localcluster import nodes, scheduler


def _node(config: nodes.NodeConfig, *, ready: bool = True) -> dict[str, Any]:
    obj = nodes.node_object(config)
    obj["status"] = nodes.ready_status(config, now="t", ready=ready, since="t", address="127.0.0.1")
    return obj


def _pod(gpus: int = 0, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "x"}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    return {
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [container], **spec},
    }


RIGS = [_node(c) for c in nodes.default_layout()]


def test_five_gpus_on_four_gpu_rigs_is_unschedulable_with_the_real_message() -> None:
    decision = scheduler.schedule(_pod(gpus=5), RIGS, {})
    assert decision.node is None
    assert decision.message.startswith("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")


def test_gpus_add_up_across_pods() -> None:
    used = scheduler.usage(
        [_pod(gpus=3) | {"spec": {**_pod(gpus=3)["spec"], "nodeName": "gpu-rig-0"}}]
    )
    assert scheduler.schedule(_pod(gpus=2), RIGS, used).node == "gpu-rig-1"
    both = {"gpu-rig-0": {"nvidia.com/gpu": 3}, "gpu-rig-1": {"nvidia.com/gpu": 3}}
    assert scheduler.schedule(_pod(gpus=2), RIGS, both).node is None


def test_node_selector_and_required_affinity() -> None:
    assert (
        scheduler.schedule(
            _pod(nodeSelector={"kubernetes.io/hostname": "gpu-rig-1"}), RIGS, {}
        ).node
        == "gpu-rig-1"
    )
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "nvidia.com/gpu.count", "operator": "Gt", "values": ["8"]}
                        ]
                    }
                ]
            }
        }
    }
    decision = scheduler.schedule(_pod(affinity=affinity), RIGS, {})
    assert decision.node is None
    assert "2 node(s) didn't match Pod's node affinity/selector" in decision.message


def test_taints_need_tolerations() -> None:
    tainted = [
        _node(
            nodes.NodeConfig(
                name="a", taints=[{"key": "gpu", "value": "h100", "effect": "NoSchedule"}]
            )
        )
    ]
    decision = scheduler.schedule(_pod(), tainted, {})
    assert decision.message.startswith(
        "0/1 nodes are available: 1 node(s) had untolerated taint {gpu: h100}."
    )
    tolerated = _pod(tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}])
    assert scheduler.schedule(tolerated, tainted, {}).node == "a"


def test_not_ready_nodes_are_skipped() -> None:
    down = [_node(nodes.NodeConfig(name="a"), ready=False)]
    assert (
        "untolerated taint {node.kubernetes.io/not-ready: }"
        in scheduler.schedule(_pod(), down, {}).message
    )


def test_requests_count_sidecars_and_the_largest_init() -> None:
    pod = {
        "spec": {
            "initContainers": [
                {"name": "init", "resources": {"requests": {"cpu": "4"}}},
                {
                    "name": "side",
                    "restartPolicy": "Always",
                    "resources": {"requests": {"cpu": "500m"}},
                },
            ],
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}],
        }
    }
    assert scheduler.pod_requests(pod) == {"cpu": 4000, "memory": 2**30}
    pod["spec"]["initContainers"][0]["resources"]["requests"]["cpu"] = "1"
    assert scheduler.pod_requests(pod)["cpu"] == 1500


@pytest.mark.parametrize(
    ("spec", "wanted"),
    [
        ({"schedulingGates": [{"name": "x"}]}, True),
        ({}, False),
    ],
)
def test_gates(spec: dict[str, Any], wanted: bool) -> None:
    assert scheduler.is_gated(_pod(**spec)) is wanted


def test_layout_file_roundtrip(tmp_path: Any) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text(
        "nodes:\n- {name: big, gpus: 8, gpuProduct: NVIDIA-H200, taints: [{key: a, effect: NoSchedule}]}\n"
        "- {name: kwok-0, gpus: 8, virtual: true}\n"
    )
    configs = nodes.load_layout(path)
    assert [c.name for c in configs] == ["big", "kwok-0"]
    assert nodes.labels(configs[0])["nvidia.com/gpu.product"] == "NVIDIA-H200"
    assert nodes.parse_layout(__import__("json").loads(nodes.dump_layout(configs))) == configs
    path.write_text("nodes:\n- {name: x, gpu: 3}\n")
    with pytest.raises(Exception, match="unknown field"):
        nodes.load_layout(path)
