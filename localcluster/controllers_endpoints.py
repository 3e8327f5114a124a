"""Pure Endpoints and EndpointSlice computation for Services.

These objects are what the pod DNS (``/etc/hosts`` per pod) is generated from,
and what the operator and kubectl read, so they follow the endpoints
controller: selected pods with an IP, ready ones under ``addresses`` and the
rest under ``notReadyAddresses`` (all ready when the Service sets
``publishNotReadyAddresses``), ``hostname`` set when the pod's
``subdomain`` names the Service, named targetPorts looked up in the pod's
container ports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pot.localcluster.controllers import Obj, is_deleting, is_ready, is_terminal, meta


def selects(service: Obj, pod: Obj) -> bool:
    """Whether the Service's selector picks ``pod`` (same namespace assumed)."""
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector:
        return False
    labels = meta(pod).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _target_port(port: Obj, pod: Obj) -> int | None:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for cport in container.get("ports") or []:
            if cport.get("name") == target:
                return int(cport["containerPort"])
    return None


def endpoints(service: Obj, pods: Sequence[Obj]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(Endpoints, EndpointSlice) bodies for ``service``; None for selector-less Services."""
    spec = service.get("spec") or {}
    if not spec.get("selector") or spec.get("type") == "ExternalName":
        return None
    name = str(meta(service).get("name"))
    ns = str(meta(service).get("namespace"))
    publish_all = bool(spec.get("publishNotReadyAddresses"))
    ready_addrs: list[dict[str, Any]] = []
    not_ready: list[dict[str, Any]] = []
    slice_eps: list[dict[str, Any]] = []
    ports: dict[tuple[str, int], dict[str, Any]] = {}
    for pod in sorted(pods, key=lambda p: str(meta(p).get("name"))):
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or is_terminal(pod) or not selects(service, pod):
            continue
        pspec = pod.get("spec") or {}
        address: dict[str, Any] = {
            "ip": ip,
            "nodeName": pspec.get("nodeName"),
            "targetRef": {
                "kind": "Pod",
                "namespace": ns,
                "name": meta(pod).get("name"),
                "uid": meta(pod).get("uid"),
            },
        }
        if pspec.get("subdomain") == name and pspec.get("hostname"):
            address["hostname"] = pspec["hostname"]
        terminating = is_deleting(pod)
        ready = (is_ready(pod) and not terminating) or publish_all
        (ready_addrs if ready else not_ready).append(address)
        ep: dict[str, Any] = {
            "addresses": [ip],
            "conditions": {"ready": ready, "serving": is_ready(pod), "terminating": terminating},
            "nodeName": pspec.get("nodeName"),
            "targetRef": address["targetRef"],
        }
        if "hostname" in address:
            ep["hostname"] = address["hostname"]
        slice_eps.append(ep)
        for port in spec.get("ports") or []:
            number = _target_port(port, pod)
            if number is not None:
                pname = str(port.get("name") or "")
                ports[(pname, number)] = {
                    "name": pname,
                    "port": number,
                    "protocol": port.get("protocol", "TCP"),
                }
    port_list = sorted(ports.values(), key=lambda p: (p["name"], p["port"]))
    subset: dict[str, Any] = {}
    if ready_addrs:
        subset["addresses"] = ready_addrs
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    if subset and port_list:
        subset["ports"] = [{k: v for k, v in p.items() if v != ""} for p in port_list]
    labels = dict(meta(service).get("labels") or {})
    ep_obj = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "subsets": [subset] if subset else [],
    }
    slice_obj = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-pot",
            "namespace": ns,
            "labels": {
                **labels,
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": slice_eps,
        "ports": port_list,
    }
    return ep_obj, slice_obj


def same_content(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether an existing Endpoints/EndpointSlice already says what ``desired`` does."""
    if current is None:
        return False
    fields = ("subsets",) if desired.get("kind") == "Endpoints" else ("endpoints", "ports")
    return all((current.get(f) or []) == (desired.get(f) or []) for f in fields)
