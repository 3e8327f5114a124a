"""Defaults the real API server fills into built-in objects on write.

Controllers and clients read these back (a Deployment's ``spec.replicas``, a
Service's ``clusterIP``, a Secret's ``data`` from ``stringData``), so the
local cluster fills the ones this project's components and charts rely on.
The full defaulting of the Go types is far larger; this is the subset that
matters here (docs/localcluster.md lists it).
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]

SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/16")
"""ClusterIPs are allocated from here (kind and kubeadm use 10.96.0.0/12)."""


def _containers(spec: Obj) -> None:
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if isinstance(c, dict):
            c.setdefault("imagePullPolicy", "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            for p in c.get("ports") or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")


def pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    _containers(spec)


def _template(obj: Obj) -> None:
    tmpl = (obj.get("spec") or {}).get("template")
    if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
        pod_spec(tmpl["spec"])


def _pod(obj: Obj, _: Callable[[], str]) -> None:
    if isinstance(obj.get("spec"), dict):
        pod_spec(obj["spec"])


def _workload(obj: Obj, _: Callable[[], str]) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        _template(obj)


def _statefulset(obj: Obj, next_ip: Callable[[], str]) -> None:
    # Issue 4: `kubectl rollout status` needs the defaulted update strategy.
    _workload(obj, next_ip)
    spec = obj.get("spec")
    if isinstance(spec, dict):
        spec.setdefault("podManagementPolicy", "OrderedReady")
        strategy = spec.setdefault("updateStrategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                strategy.setdefault("rollingUpdate", {"partition": 0})


def _deployment(obj: Obj, next_ip: Callable[[], str]) -> None:
    _workload(obj, next_ip)
    spec = obj.get("spec")
    if isinstance(spec, dict):
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                strategy.setdefault("rollingUpdate", {"maxSurge": "25%", "maxUnavailable": "25%"})


def _job(obj: Obj, _: Callable[[], str]) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        _template(obj)
        tspec = (spec.get("template") or {}).get("spec")
        if isinstance(tspec, dict) and tspec.get("restartPolicy") == "Always":
            tspec["restartPolicy"] = "Never"
        # Issue 4: the generated selector (`kubectl logs job/NAME` follows it).
        meta = obj.get("metadata") or {}
        uid, name = meta.get("uid"), meta.get("name")
        tmpl = spec.get("template")
        if (
            uid
            and not spec.get("manualSelector")
            and not spec.get("selector")
            and isinstance(tmpl, dict)
        ):
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            labels = tmpl.setdefault("metadata", {}).setdefault("labels", {})
            for key, value in (
                ("batch.kubernetes.io/controller-uid", uid),
                ("controller-uid", uid),
                ("batch.kubernetes.io/job-name", name),
                ("job-name", name),
            ):
                labels.setdefault(key, value)


def keep_allocated(obj: Obj, old: Obj | None) -> None:
    """An update that omits a Service's clusterIP keeps the one allocated (the real
    registry's patchAllocatedValues): ``kubectl replace`` must not move the Service."""
    spec, old_spec = obj.get("spec"), (old or {}).get("spec")
    if not isinstance(spec, dict) or not isinstance(old_spec, dict):
        return
    external = spec.get("type", "ClusterIP") == "ExternalName"
    if not external and not spec.get("clusterIP") and old_spec.get("clusterIP"):
        spec["clusterIP"] = old_spec["clusterIP"]
        if not spec.get("clusterIPs") and old_spec.get("clusterIPs"):
            spec["clusterIPs"] = old_spec["clusterIPs"]


def _service(obj: Obj, next_ip: Callable[[], str]) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
        spec["clusterIP"] = next_ip()
    if spec.get("clusterIP") and spec["clusterIP"] != "None":
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
    for p in spec.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
            if "port" in p:
                p.setdefault("targetPort", p["port"])


def _secret(obj: Obj, _: Callable[[], str]) -> None:
    if not obj.get("type"):  # kubectl's protobuf body of `create secret generic` sends ""
        obj["type"] = "Opaque"
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict):
        data = obj.setdefault("data", {})
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()


_DEFAULTERS: dict[tuple[str, str], Callable[[Obj, Callable[[], str]], None]] = {
    ("", "pods"): _pod,
    ("", "services"): _service,
    ("", "secrets"): _secret,
    ("apps", "deployments"): _deployment,
    ("apps", "replicasets"): _workload,
    ("apps", "statefulsets"): _statefulset,
    ("apps", "daemonsets"): lambda o, n: _template(o),
    ("batch", "jobs"): _job,
}


def apply_defaults(
    group: str, resource: str, obj: Obj, next_ip: Callable[[], str], old: Obj | None = None
) -> None:
    """Fill the defaults of a create, or of an update of ``old``."""
    if (group, resource) == ("", "services"):
        keep_allocated(obj, old)
    fn = _DEFAULTERS.get((group, resource))
    if fn is not None:
        fn(obj, next_ip)


def allocate_ip(used: set[str]) -> str:
    for host in SERVICE_CIDR.hosts():
        ip = str(host)
        if ip.endswith(".0.1") or ip in used:
            continue  # .0.1 is the "kubernetes" Service on real clusters
        return ip
    raise RuntimeError("service IP range exhausted")
