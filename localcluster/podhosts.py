"""Cluster DNS without a DNS server: one ``/etc/hosts`` per pod.

Pods resolve the same names as in a real cluster. Decision (issue 4): there
is no kube-proxy, so a Service name resolves to the IPs of its ready
endpoints (every Service behaves like a headless one; clients that retry over
the addresses ``getaddrinfo`` returns see all of them). Consequences, stated
in docs/localcluster.md: a Service's ``port`` must equal its ``targetPort``,
and its ClusterIP is recorded but not reachable.

Names written, for each Service ``svc`` in namespace ``ns`` with endpoints:
``svc.ns.svc.cluster.local``, ``svc.ns.svc``, ``svc.ns`` (and ``svc`` for pods
of ``ns``); for each endpoint with a hostname (StatefulSet pods under their
governing Service): ``host.svc.ns.svc.cluster.local`` and ``host.svc.ns.svc``.
The pod's own ``hostname`` (and its FQDN when it has a subdomain) maps to its
IP, as the kubelet writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Obj = Mapping[str, Any]
DOMAIN = "cluster.local"


def service_records(endpoints: Iterable[Obj]) -> dict[str, list[tuple[str, list[str]]]]:
    """Per namespace: (ip, names) lines derived from Endpoints objects."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for ep in endpoints:
        meta = ep.get("metadata") or {}
        svc, ns = meta.get("name"), meta.get("namespace")
        if not svc or not ns:
            continue
        lines = out.setdefault(ns, [])
        for subset in ep.get("subsets") or []:
            for addr in subset.get("addresses") or []:
                ip = addr.get("ip")
                if not ip:
                    continue
                names = [f"{svc}.{ns}.svc.{DOMAIN}", f"{svc}.{ns}.svc", f"{svc}.{ns}"]
                if addr.get("hostname"):
                    host = addr["hostname"]
                    names = [f"{host}.{svc}.{ns}.svc.{DOMAIN}", f"{host}.{svc}.{ns}.svc", *names]
                lines.append((ip, names))
    for lines in out.values():
        lines.sort()
    return out


def render(pod: Obj, pod_ip: str, records: Mapping[str, list[tuple[str, list[str]]]]) -> str:
    """The ``/etc/hosts`` of ``pod``."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    ns = meta.get("namespace", "default")
    hostname = spec.get("hostname") or meta.get("name", "")
    lines = [
        "# Kubernetes-managed hosts file (pot local cluster: cluster DNS lives here).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    own = [hostname]
    if spec.get("subdomain"):
        own.insert(0, f"{hostname}.{spec['subdomain']}.{ns}.svc.{DOMAIN}")
    lines.append(f"{pod_ip}\t{' '.join(own)}")
    for namespace, entries in sorted(records.items()):
        for ip, names in entries:
            extra = []
            if namespace == ns:
                # A resolver's search path would find `svc` and `host.svc` in
                # the pod's own namespace; /etc/hosts has no search path.
                svc_part = names[-1].split(".")[0]
                extra.append(svc_part)
                if len(names) > 3:
                    extra.append(".".join(names[0].split(".")[:2]))
            lines.append(f"{ip}\t{' '.join(names + extra)}")
    return "\n".join(lines) + "\n"
