"""Opt-in (POT_OPERATOR_REAL=1, ~2 min on 2 cores): the operator with the real
components on the local cluster: four ``python -m pot.validator`` replicas
(issue 6) and a ``torchrun -m pot.trainer`` gang (issue 5), exactly the
command lines of docs/protocol.md; only the settlement sidecar is a stand-in
(no chain here). The ValidatorSet becomes Ready with a primary and recovers a
deleted replica; the task trains, its progress is mirrored from the
validators, and it reaches Settling once they commit the allocation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from .conftest import STANDINS, kopf_operator, wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.environ.get("POT_OPERATOR_REAL") != "1", reason="opt-in: set POT_OPERATOR_REAL=1"
    ),
]


@pytest.fixture(scope="module")
def real_operator(cluster: Any) -> Any:
    yield from kopf_operator(
        {
            "KUBECONFIG": str(cluster.kubeconfig),
            "POT_LEADER_ELECTION": "0",
            "POT_METRICS_PORT": "0",
            "POT_POLL_INTERVAL": "1",
            "POT_PROGRESS_INTERVAL": "2",
            "POT_STAKE_CHECK": "0",  # no chain here to read the miners' stakes from
            "POT_SETTLEMENT_COMMAND": json.dumps(
                ["python", str(STANDINS / "standin_validator.py"), "8081"]
            ),
        }
    )


@pytest.mark.timeout(420)
def test_real_validators_and_trainers(cluster: Any, real_operator: Any) -> None:
    ns = cluster.namespace("real")
    cluster.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples" / "validatorset.yaml"))
    wait_for(
        "ValidatorSet Ready",
        lambda: (cluster.vset(ns).get("status") or {}).get("phase") == "Ready",
        timeout=150,
    )
    assert cluster.vset(ns)["status"]["primary"] == "vset-0"
    cluster.core.delete_namespaced_pod("vset-2", ns)
    wait_for(
        "a replica down",
        lambda: cluster.vset(ns)["status"]["readyReplicas"] < 4,
        timeout=30,
        interval=0.2,
    )
    wait_for("recovered", lambda: cluster.vset(ns)["status"]["readyReplicas"] == 4, timeout=150)
    cluster.apply_task(ns, "mlp-demo")
    wait_for(
        "Settling",
        lambda: (cluster.task(ns, "mlp-demo").get("status") or {}).get("phase") == "Settling",
        timeout=240,
    )
    st = cluster.task(ns, "mlp-demo")["status"]
    assert st["progress"]["step"] == 200 and st["progress"]["segmentsVerified"] >= 1
    assert st["progress"]["segmentsRejected"] == 0
    assert {c["type"]: c["status"] for c in st["conditions"]}["Verified"] == "True"
