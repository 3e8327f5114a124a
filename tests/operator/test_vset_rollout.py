"""A ValidatorSet edit reaches its StatefulSet on the local cluster, removals included:
the operator replaces the pod template (a JSON patch), so a nodeSelector or tolerations
dropped from the ValidatorSet leave the replicas' template (a merge patch kept them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "validatorset.yaml"


def _pod_spec(cluster: Any, ns: str) -> dict[str, Any]:
    sts = json.loads(cluster.kubectl("get", "statefulset", "vset", "-n", ns, "-o", "json"))
    spec: dict[str, Any] = sts["spec"]["template"]["spec"]
    return spec


def test_removing_placement_from_a_validator_set_removes_it_from_the_replicas(
    cluster: Any, operator: Any
) -> None:
    ns = cluster.namespace("vset-rollout")
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["nodeSelector"] = {"pool": "validators", "zone": "a"}
    doc["spec"]["tolerations"] = [{"key": "dedicated", "operator": "Exists"}]
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(doc))
    wait_for(
        "the StatefulSet with the placement",
        lambda: _pod_spec(cluster, ns).get("nodeSelector") == {"pool": "validators", "zone": "a"},
    )
    # One selector key less: a merge patch cannot drop a key it does not name.
    cluster.kubectl(
        "patch", "validatorset", "vset", "-n", ns, "--type=json",
        "-p", '[{"op": "remove", "path": "/spec/nodeSelector/zone"}]',
    )  # fmt: skip
    wait_for(
        "zone dropped from the nodeSelector",
        lambda: _pod_spec(cluster, ns).get("nodeSelector") == {"pool": "validators"},
    )
    cluster.kubectl(
        "patch", "validatorset", "vset", "-n", ns, "--type=json", "-p",
        '[{"op": "remove", "path": "/spec/nodeSelector"},'
        ' {"op": "remove", "path": "/spec/tolerations"}]',
    )  # fmt: skip
    spec = wait_for(
        "nodeSelector and tolerations gone from the StatefulSet",
        lambda: (
            (s := _pod_spec(cluster, ns)).get("nodeSelector") is None
            and s.get("tolerations") is None
            and s
        ),
    )
    assert [c["name"] for c in spec["containers"]] == ["validator", "settlement"]
