"""What an update of a built-in object may not change, as the real API server's validation.

Built-ins are otherwise stored as given (docs/localcluster.md), but these
rules decide whether an operator or a chart upgrade works on a real cluster at
all: a StatefulSet whose ``volumeClaimTemplates`` changed, a Deployment whose
selector changed or a Pod whose command changed is refused there (422), so it
is refused here too, with the real server's message.

* Pods: only ``containers[*].image``, ``initContainers[*].image``,
  ``activeDeadlineSeconds``, ``terminationGracePeriodSeconds``,
  ``tolerations`` (additions) and ``schedulingGates`` (removals; while gated,
  ``nodeSelector`` and ``affinity`` too) may change; ``nodeName`` is set by
  the ``binding`` sub-resource.
* StatefulSets: only ``replicas``, ``ordinals``, ``template``,
  ``updateStrategy``, ``revisionHistoryLimit``,
  ``persistentVolumeClaimRetentionPolicy`` and ``minReadySeconds``.
* Deployments, ReplicaSets, DaemonSets, Jobs: ``spec.selector``; Jobs also
  ``spec.template`` unless the Job is suspended.

The old object is compared with the defaults of this server applied, so an
object stored before a default was added can still be updated.
"""

from __future__ import annotations

import copy
from typing import Any

from pot.localcluster import defaulting, statuses
from pot.localcluster.resources import ResourceType

Obj = dict[str, Any]

_STS_MUTABLE = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)
_STS_MESSAGE = (
    "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', "
    "'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' "
    "and 'minReadySeconds' are forbidden"
)
_POD_MESSAGE = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
    "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
    "set to 1 if it was previously negative)"
)
_SELECTED = {("apps", "deployments"), ("apps", "replicasets"), ("apps", "daemonsets")}


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _invalid(t: ResourceType, new: Obj, field: str, reason: str, message: str) -> None:
    name = str((new.get("metadata") or {}).get("name") or "")
    raise statuses.invalid(t.kind, t.group, name, [statuses.Cause(field, reason, message)])


def _pod_comparable(spec: Obj, old: Obj) -> Obj:
    """``spec`` with what a pod update may change replaced by the old values."""
    out = copy.deepcopy(spec)
    for field in ("containers", "initContainers"):
        mine, theirs = out.get(field), old.get(field)
        if isinstance(mine, list) and isinstance(theirs, list) and len(mine) == len(theirs):
            for c, o in zip(mine, theirs, strict=True):
                if isinstance(c, dict) and isinstance(o, dict):
                    c["image"] = o.get("image")
                    if "image" not in o:
                        c.pop("image")
    mutable = ["activeDeadlineSeconds", "terminationGracePeriodSeconds", "schedulingGates"]
    if old.get("schedulingGates"):
        mutable += ["nodeSelector", "affinity"]  # mutable scheduling directives of a gated pod
    old_tolerations = old.get("tolerations") or []
    if isinstance(out.get("tolerations"), list) and all(
        t in out["tolerations"] for t in old_tolerations
    ):
        mutable.append("tolerations")
    for field in mutable:
        if field in old:
            out[field] = old[field]
        else:
            out.pop(field, None)
    return out


def _check_pod(t: ResourceType, new: Obj, spec: Obj, old_spec: Obj) -> None:
    old_gates = [
        g.get("name") for g in old_spec.get("schedulingGates") or [] if isinstance(g, dict)
    ]
    for gate in spec.get("schedulingGates") or []:
        name = gate.get("name") if isinstance(gate, dict) else gate
        if name not in old_gates:
            _invalid(
                t,
                new,
                "spec.schedulingGates",
                "FieldValueForbidden",
                f"Forbidden: only deletion is allowed, but found new scheduling gate '{name}'",
            )
    if _pod_comparable(spec, old_spec) != old_spec:
        _invalid(t, new, "spec", "FieldValueForbidden", _POD_MESSAGE)


def check_update(t: ResourceType, new: Obj, old: Obj) -> None:
    """422 when ``new`` (defaults applied) changes what an update of ``old`` may not."""
    kind = (t.group, t.resource)
    if kind not in _SELECTED | {("", "pods"), ("apps", "statefulsets"), ("batch", "jobs")}:
        return
    before = copy.deepcopy(old)
    defaulting.apply_defaults(t.group, t.resource, before, lambda: "", old)
    spec, old_spec = _spec(new), _spec(before)
    if kind == ("", "pods"):
        _check_pod(t, new, spec, old_spec)
        return
    if kind == ("apps", "statefulsets"):
        rest = {k: v for k, v in spec.items() if k not in _STS_MUTABLE}
        if rest != {k: v for k, v in old_spec.items() if k not in _STS_MUTABLE}:
            _invalid(t, new, "spec", "FieldValueForbidden", _STS_MESSAGE)
        return
    if spec.get("selector") != old_spec.get("selector"):
        _invalid(t, new, "spec.selector", "FieldValueInvalid", "Invalid value: field is immutable")
    suspended = bool(old_spec.get("suspend"))
    if (
        kind == ("batch", "jobs")
        and not suspended
        and spec.get("template") != old_spec.get("template")
    ):
        _invalid(t, new, "spec.template", "FieldValueInvalid", "Invalid value: field is immutable")
