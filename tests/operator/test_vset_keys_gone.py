"""A running ValidatorSet whose keys Secret is deleted: it runs on its accepted keys.

The replicas mount the set's own copy of the keys (``<set>-accepted-keys``), so the
user's Secret going away changes nothing about them: the set stays Ready, with a
``KeysSecretPresent=False`` warning, until the Secret is back (the same keys) or a
change is refused (other keys). A set that never got a copy waits as before.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pot import keys
from pot.operator import conditions, vsets
from pot.settlement import receipts

from .test_vset_lifecycle import KEPT, NAME, NS, SECRET, World, vset


@pytest.fixture(autouse=True)
def chain_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receipts, "chain_id", lambda url, *, timeout: 1)


def keys_present(status: dict[str, Any]) -> dict[str, Any] | None:
    cond = conditions.find(status.get("conditions"), conditions.KEYS_PRESENT)
    return None if cond is None else dict(cond)


def ready_set(w: World) -> list[Any]:
    """Every replica answers ready in view 0, as the validators' GET /v1/status would."""
    for i in range(4):
        pod = {
            "metadata": {"name": f"{NAME}-{i}", "namespace": NS, "labels": {}},
            "status": {"podIP": f"10.0.0.{i}", "conditions": [{"type": "Ready", "status": "True"}]},
        }
        w.rt.vset_pods.setdefault((NS, NAME), {})[pod["metadata"]["name"]] = pod

    class Answers:
        async def status(self, base: str) -> dict[str, Any]:
            return {"ready": True, "view": 0, "primary": 0, "lastCommittedSeq": 3}

    return [Answers()]


async def test_a_set_whose_keys_secret_is_deleted_runs_on_its_accepted_keys() -> None:
    """The user's keys Secret deleted once the set had its copy of the accepted keys: the
    set turned Pending (KeysSecretNotFound) and its tasks could not start, though its
    replicas ran on the copy and nothing about the membership had changed."""
    w = World()
    (answers,) = ready_set(w)
    w.reconcile_client = answers
    status = await w.reconcile(vset())
    assert status["phase"] == "Ready" and keys_present(status) is None
    kept = copy.deepcopy(w.kube.objects[("secrets", NS, KEPT)])
    statefulset = copy.deepcopy(w.kube.objects[("statefulsets", NS, NAME)])
    peers = w.peers()

    body = w.kube.objects.pop(("secrets", NS, SECRET))
    w.rt.observe_secret(body, True)
    events = len(w.kube.events)
    status = await w.reconcile({**vset(), "status": status})
    assert status["phase"] == "Ready", status["message"]
    ready = conditions.find(status.get("conditions"), conditions.READY)
    assert ready is not None and ready["status"] == "True"
    warning = keys_present(status)
    assert warning is not None
    assert (warning["status"], warning["reason"]) == ("False", "KeysSecretNotFound")
    assert f'runs on the keys it accepted (Secret "{KEPT}")' in warning["message"]
    assert "same keys" in warning["message"] and "MembershipChanged" in warning["message"]
    assert w.kube.objects[("statefulsets", NS, NAME)] == statefulset
    assert w.kube.objects[("secrets", NS, KEPT)] == kept
    assert w.peers() == peers
    (event,) = w.kube.events[events:]
    assert (event["type"], event["reason"]) == ("Warning", "KeysSecretNotFound")
    for i in range(4):
        assert w.keys[i].secret.hex() not in repr(status) + repr(w.kube.events)
    # Another pass changes nothing, and posts no second Event.
    assert await w.reconcile({**vset(), "status": status}) == status
    assert len(w.kube.events) == events + 1
    # What its tasks see: a Ready set, with its quorum.
    view = vsets.view_of(w.rt.vsets[(NS, NAME)])
    assert view.phase == "Ready" and view.quorum

    # Re-created with the same keys: the warning clears.
    w.put_secret(w.keys, "5")
    status = await w.reconcile({**vset(), "status": status})
    assert status["phase"] == "Ready"
    cleared = keys_present(status)
    assert cleared is not None and (cleared["status"], cleared["reason"]) == (
        "True",
        "KeysSecretFound",
    )
    assert w.kube.objects[("statefulsets", NS, NAME)] == statefulset

    # Deleted again, then re-created with another key: refused, as any key change.
    w.kube.objects.pop(("secrets", NS, SECRET))
    w.rt.observe_secret(body, True)
    assert (await w.reconcile({**vset(), "status": status}))["phase"] == "Ready"
    w.put_secret({**w.keys, 1: keys.generate()}, "6")
    status = await w.reconcile({**vset(), "status": status})
    ready = conditions.find(status.get("conditions"), conditions.READY)
    assert ready is not None and ready["reason"] == "MembershipChanged"
    assert f'Secret "{SECRET}" item validator-1.key (another key)' in status["message"]
    assert w.kube.objects[("statefulsets", NS, NAME)] == statefulset
    assert w.kube.objects[("secrets", NS, KEPT)] == kept


async def test_a_set_without_its_kept_keys_still_waits_for_its_keys_secret() -> None:
    w = World()
    body = w.kube.objects.pop(("secrets", NS, SECRET))
    w.rt.observe_secret(body, True)
    status = await w.reconcile(vset())
    assert (status["phase"], status["conditions"][0]["reason"]) == (
        "Pending",
        "KeysSecretNotFound",
    )
    assert ("statefulsets", NS, NAME) not in w.kube.objects
    # A running set whose copy is an earlier set's (same name, another uid): not its keys.
    w = World()
    await w.reconcile(vset())
    w.kube.objects[("secrets", NS, KEPT)]["metadata"]["ownerReferences"][0]["uid"] = "u-0"
    w.rt.observe_secret(w.kube.objects.pop(("secrets", NS, SECRET)), True)
    status = await w.reconcile(vset())
    assert (status["phase"], status["conditions"][0]["reason"]) == (
        "Pending",
        "KeysSecretNotFound",
    )
