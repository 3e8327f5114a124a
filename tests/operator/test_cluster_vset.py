"""A running ValidatorSet on the local cluster under kopf's KopfRunner: what may change.

The validators are the stand-ins next to this file. Replicas, stakes and the chain are
refused by the API server (the CRD's transition rules); a keys Secret that names other
keys is refused by the operator, which leaves the replicas' peers.json as it was, and
the copy of the accepted keys the replicas mount: one that restarts keeps its key.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OTHER_KEY = "0x" + "42" * 32


def _reason(cluster: Any, ns: str, ctype: str = "Ready") -> str:
    conds = (cluster.vset(ns).get("status") or {}).get("conditions") or []
    return next((str(c.get("reason")) for c in conds if c["type"] == ctype), "")


def _dev_key(i: int) -> str:
    (secret, *_) = yaml.safe_load_all((EXAMPLES / "dev-keys.yaml").read_text())
    return str(secret["stringData"][f"validator-{i}.key"])


def _ready_pod(cluster: Any, ns: str, name: str, not_uid: str) -> Any:
    pod = cluster.core.read_namespaced_pod(name, ns)
    conds = pod.status.conditions or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conds)
    return pod if pod.metadata.uid != not_uid and ready else None


def test_a_running_sets_membership_is_kept(cluster: Any, operator: Any) -> None:
    ns = cluster.namespace("vset-life")
    cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "validatorset.yaml"))
    wait_for("Ready", lambda: (cluster.vset(ns).get("status") or {}).get("phase") == "Ready")
    peers = cluster.core.read_namespaced_config_map("vset-config", ns).data["peers.json"]

    for patch, field in (
        ({"replicas": 7}, "spec.replicas"),
        ({"stakes": ["1", "1", "1", "2"]}, "spec.stakes"),
        ({"chain": {"chainId": 8453}}, "spec.chain"),
    ):
        with pytest.raises(AssertionError, match="cannot change on a running ValidatorSet") as e:
            cluster.kubectl(
                "patch", "-n", ns, "vset", "vset", "--type=merge", "-p", json.dumps({"spec": patch})
            )
        assert field in str(e.value)

    # Another key for replica 3 in the Secret: not rolled out.
    cluster.kubectl(
        "patch",
        "-n",
        ns,
        "secret",
        "vset-keys",
        "--type=merge",
        "-p",
        json.dumps({"stringData": {"validator-3.key": OTHER_KEY}}),
    )
    wait_for("the refusal", lambda: _reason(cluster, ns) == "MembershipChanged")
    st = cluster.vset(ns)["status"]
    assert 'Secret "vset-keys" item validator-3.key' in st["message"]
    assert st["phase"] == "Degraded" and st["readyReplicas"] == 4
    assert OTHER_KEY[2:] not in json.dumps(st)
    assert cluster.core.read_namespaced_config_map("vset-config", ns).data["peers.json"] == peers

    # The replicas mount the keys the set accepted, which the refusal left as they were:
    # a replica that restarts now copies its accepted key, not the refused one.
    kept = cluster.core.read_namespaced_secret("vset-accepted-keys", ns)
    assert kept.immutable is True
    (owner,) = kept.metadata.owner_references
    assert (owner.kind, owner.name, owner.controller) == ("ValidatorSet", "vset", True)
    accepted = base64.b64decode(kept.data["validator-3.key"]).decode()
    assert accepted == _dev_key(3) != OTHER_KEY
    old_uid = cluster.core.read_namespaced_pod("vset-3", ns).metadata.uid
    cluster.kubectl("delete", "pod", "-n", ns, "vset-3", "--wait=false")
    pod = wait_for("replica 3 back and ready", lambda: _ready_pod(cluster, ns, "vset-3", old_uid))
    (copied,) = cluster.directory.rglob(f"pods/{ns}_vset-3_{pod.metadata.uid[:8]}/volumes/key/*")
    assert copied.name == "validator-3.key" and copied.read_text() == accepted
    assert _reason(cluster, ns) == "MembershipChanged"
    assert "keeps running on the keys it accepted" in cluster.vset(ns)["status"]["message"]

    # The old key back: Ready again, the same peers.json; a tuning change still rolls out.
    cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "dev-keys.yaml"))
    wait_for("Ready again", lambda: _reason(cluster, ns) == "AllReplicasReady")

    # The keys Secret deleted: the set runs on its accepted keys, Ready, with a warning.
    cluster.kubectl("delete", "secret", "-n", ns, "vset-keys")
    wait_for(
        "the warning", lambda: _reason(cluster, ns, "KeysSecretPresent") == "KeysSecretNotFound"
    )
    assert cluster.vset(ns)["status"]["phase"] == "Ready"
    cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "dev-keys.yaml"))
    wait_for("no warning", lambda: _reason(cluster, ns, "KeysSecretPresent") == "KeysSecretFound")
    assert _reason(cluster, ns) == "AllReplicasReady"
    assert cluster.core.read_namespaced_config_map("vset-config", ns).data["peers.json"] == peers
    cluster.kubectl(
        "patch", "-n", ns, "vset", "vset", "--type=merge", "-p", '{"spec":{"pbft":{"batchSize":7}}}'
    )
    wait_for(
        "the tuning in peers.json",
        lambda: (
            '"batchSize":7'
            in cluster.core.read_namespaced_config_map("vset-config", ns).data["peers.json"]
        ),
    )


def test_a_set_named_after_another_sets_service_is_refused(cluster: Any, operator: Any) -> None:
    ns = cluster.namespace("vset-names")
    cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "validatorset.yaml"))
    wait_for("Ready", lambda: (cluster.vset(ns).get("status") or {}).get("phase") == "Ready")
    before = cluster.core.read_namespaced_service("vset-peers", ns)
    doc = (EXAMPLES / "validatorset.yaml").read_text().replace("name: vset\n", "name: vset-peers\n")
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=doc)
    wait_for(
        "the conflict named",
        lambda: (
            'Service "vset-peers"'
            in (cluster.vset(ns, "vset-peers").get("status") or {}).get("message", "")
        ),
    )
    after = cluster.core.read_namespaced_service("vset-peers", ns)
    assert after.spec.selector == before.spec.selector
    assert [o.uid for o in after.metadata.owner_references] == [
        o.uid for o in before.metadata.owner_references
    ]
    assert (cluster.vset(ns).get("status") or {}).get("phase") == "Ready"
