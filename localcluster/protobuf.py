"""The few protobuf request bodies kubectl sends, decoded to JSON objects.

kubectl 1.37's typed commands (``kubectl create configmap|secret|namespace|
serviceaccount|deployment|job``, ``kubectl run``, ``kubectl auth can-i``) and helm's deletes
(DeleteOptions) send ``application/vnd.kubernetes.protobuf`` bodies, and
client-go has no fallback to JSON on 415 for protobuf (only for CBOR). So the
server decodes the Kubernetes protobuf envelope (``k8s\\x00`` + a
``runtime.Unknown``) and the generated messages of those kinds (for pods,
deployments and jobs only the metadata, containers and the fields those
commands set; others are dropped), field numbers taken from the
``generated.proto`` files of k8s.io/api. Every other kind gets a
clear 415 (use ``kubectl apply -f``, which sends JSON). Responses are always
JSON, which every client also accepts.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

from pot.localcluster import statuses

MAGIC = b"k8s\x00"


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if pos >= len(buf):
            raise statuses.bad_request("protobuf body truncated")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs of one message: ints for varints, bytes for the rest."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, pos = _varint(buf, pos)
            yield num, v
        elif wire == 2:
            n, pos = _varint(buf, pos)
            yield num, buf[pos : pos + n]
            pos += n
        elif wire == 1:
            yield num, buf[pos : pos + 8]
            pos += 8
        elif wire == 5:
            yield num, buf[pos : pos + 4]
            pos += 4
        else:
            raise statuses.bad_request(f"unsupported protobuf wire type {wire}")


def _s(v: int | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _entry(v: int | bytes) -> tuple[str, bytes]:
    k, val = "", b""
    if isinstance(v, bytes):
        for n, x in fields(v):
            if n == 1:
                k = _s(x)
            elif n == 2 and isinstance(x, bytes):
                val = x
    return k, val


def _meta(buf: bytes) -> dict[str, Any]:
    m: dict[str, Any] = {}
    names = {1: "name", 2: "generateName", 3: "namespace"}
    for n, v in fields(buf):
        if n in names:
            if v:  # proto3 has no "unset": empty strings mean absent
                m[names[n]] = _s(v)
        elif n in (11, 12):
            k, val = _entry(v)
            m.setdefault("labels" if n == 11 else "annotations", {})[k] = val.decode()
        elif n == 14:
            m.setdefault("finalizers", []).append(_s(v))
    return m


def _configmap(buf: bytes) -> dict[str, Any]:
    o: dict[str, Any] = {}
    for n, v in fields(buf):
        if n == 1 and isinstance(v, bytes):
            o["metadata"] = _meta(v)
        elif n == 2:
            k, val = _entry(v)
            o.setdefault("data", {})[k] = val.decode()
        elif n == 3:
            k, val = _entry(v)
            o.setdefault("binaryData", {})[k] = base64.b64encode(val).decode()
        elif n == 4:
            o["immutable"] = bool(v)
    return o


def _secret(buf: bytes) -> dict[str, Any]:
    o: dict[str, Any] = {}
    for n, v in fields(buf):
        if n == 1 and isinstance(v, bytes):
            o["metadata"] = _meta(v)
        elif n == 2:
            k, val = _entry(v)
            o.setdefault("data", {})[k] = base64.b64encode(val).decode()
        elif n == 3:
            o["type"] = _s(v)
        elif n == 4:
            k, val = _entry(v)
            o.setdefault("stringData", {})[k] = val.decode()
        elif n == 5:
            o["immutable"] = bool(v)
    return o


def _namespace(buf: bytes) -> dict[str, Any]:
    o: dict[str, Any] = {}
    for n, v in fields(buf):
        if n == 1 and isinstance(v, bytes):
            o["metadata"] = _meta(v)
    return o


def _serviceaccount(buf: bytes) -> dict[str, Any]:
    o: dict[str, Any] = {}
    for n, v in fields(buf):
        if n == 1 and isinstance(v, bytes):
            o["metadata"] = _meta(v)
        elif n == 4:
            o["automountServiceAccountToken"] = bool(v)
    return o


def _delete_options(buf: bytes) -> dict[str, Any]:
    o: dict[str, Any] = {}
    for n, v in fields(buf):
        if n == 1 and isinstance(v, int):
            o["gracePeriodSeconds"] = v
        elif n == 2 and isinstance(v, bytes):
            pre = {
                ("uid" if pn == 1 else "resourceVersion"): _s(pv)
                for pn, pv in fields(v)
                if pn in (1, 2)
            }
            o["preconditions"] = pre
        elif n == 3:
            o["orphanDependents"] = bool(v)
        elif n == 4:
            o["propagationPolicy"] = _s(v)
        elif n == 5:
            o.setdefault("dryRun", []).append(_s(v))
    return o


def _quantities(entries: list[int | bytes]) -> dict[str, str]:
    out = {}
    for e in entries:
        k, val = _entry(e)
        out[k] = next((_s(q) for n, q in fields(val) if n == 1), "")
    return out


def _container(buf: bytes) -> dict[str, Any]:
    c: dict[str, Any] = {}
    scalars = {
        1: "name",
        2: "image",
        5: "workingDir",
        13: "terminationMessagePath",
        14: "imagePullPolicy",
        20: "terminationMessagePolicy",
    }
    for n, v in fields(buf):
        if n in scalars and v:
            c[scalars[n]] = _s(v)
        elif n in (3, 4):
            c.setdefault("command" if n == 3 else "args", []).append(_s(v))
        elif n == 6 and isinstance(v, bytes):
            port: dict[str, Any] = {}
            for pn, pv in fields(v):
                if pn in (2, 3) and isinstance(pv, int):
                    port["hostPort" if pn == 2 else "containerPort"] = pv
                elif pn in (1, 4, 5) and pv:
                    port[{1: "name", 4: "protocol", 5: "hostIP"}[pn]] = _s(pv)
            c.setdefault("ports", []).append(port)
        elif n == 7 and isinstance(v, bytes):
            env = {("name" if en == 1 else "value"): _s(ev) for en, ev in fields(v) if en in (1, 2)}
            c.setdefault("env", []).append(env)
        elif n == 8 and isinstance(v, bytes):
            res: dict[str, list[int | bytes]] = {}
            for rn, rv in fields(v):
                if rn in (1, 2):
                    res.setdefault("limits" if rn == 1 else "requests", []).append(rv)
            c["resources"] = {k: _quantities(es) for k, es in res.items()}
        elif n in (16, 17, 18):
            c[{16: "stdin", 17: "stdinOnce", 18: "tty"}[n]] = bool(v)
    return c


def _pod_spec(buf: bytes) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    scalars = {
        3: "restartPolicy",
        6: "dnsPolicy",
        8: "serviceAccountName",
        10: "nodeName",
        19: "schedulerName",
    }
    for n, v in fields(buf):
        if n in (2, 20) and isinstance(v, bytes):
            spec.setdefault("containers" if n == 2 else "initContainers", []).append(_container(v))
        elif n in scalars and v:
            spec[scalars[n]] = _s(v)
        elif n in (4, 5) and isinstance(v, int):
            spec["terminationGracePeriodSeconds" if n == 4 else "activeDeadlineSeconds"] = v
        elif n == 7:
            k, val = _entry(v)
            spec.setdefault("nodeSelector", {})[k] = val.decode()
    return spec


def _pod(buf: bytes) -> dict[str, Any]:
    o: dict[str, Any] = {}
    for n, v in fields(buf):
        if n == 1 and isinstance(v, bytes):
            o["metadata"] = _meta(v)
        elif n == 2 and isinstance(v, bytes):
            o["spec"] = _pod_spec(v)
    return o


def _template(buf: bytes) -> dict[str, Any]:
    return _pod(buf)  # PodTemplateSpec has Pod's metadata (1) and spec (2) numbers


def _selector(buf: bytes) -> dict[str, Any]:
    labels = {}
    for n, v in fields(buf):
        if n == 1:
            k, val = _entry(v)
            labels[k] = val.decode()
    return {"matchLabels": labels}


def _deployment(buf: bytes) -> dict[str, Any]:
    """apps/v1 Deployment (``kubectl create deployment``): replicas, selector, template."""
    o: dict[str, Any] = {}
    for n, v in fields(buf):
        if n == 1 and isinstance(v, bytes):
            o["metadata"] = _meta(v)
        elif n == 2 and isinstance(v, bytes):
            spec: dict[str, Any] = {}
            for sn, sv in fields(v):
                if sn == 1 and isinstance(sv, int):
                    spec["replicas"] = sv
                elif sn == 2 and isinstance(sv, bytes):
                    spec["selector"] = _selector(sv)
                elif sn == 3 and isinstance(sv, bytes):
                    spec["template"] = _template(sv)
            o["spec"] = spec
    return o


def _job(buf: bytes) -> dict[str, Any]:
    """batch/v1 Job (``kubectl create job``): template and counts."""
    o: dict[str, Any] = {}
    ints = {
        1: "parallelism",
        2: "completions",
        3: "activeDeadlineSeconds",
        7: "backoffLimit",
        8: "ttlSecondsAfterFinished",
    }
    for n, v in fields(buf):
        if n == 1 and isinstance(v, bytes):
            o["metadata"] = _meta(v)
        elif n == 2 and isinstance(v, bytes):
            spec: dict[str, Any] = {}
            for sn, sv in fields(v):
                if sn in ints and isinstance(sv, int):
                    spec[ints[sn]] = sv
                elif sn == 6 and isinstance(sv, bytes):
                    spec["template"] = _template(sv)
            o["spec"] = spec
    return o


def _access_review(buf: bytes) -> dict[str, Any]:
    """authorization/v1 SelfSubjectAccessReview (``kubectl auth can-i``): spec only."""
    resource = {1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource"}
    resource |= {6: "subresource", 7: "name"}
    spec: dict[str, Any] = {}
    for n, v in fields(buf):
        if n != 2 or not isinstance(v, bytes):
            continue
        for sn, sv in fields(v):
            if not isinstance(sv, bytes):
                continue
            names = resource if sn == 1 else {1: "path", 2: "verb"} if sn == 2 else {}
            attrs = {names[an]: _s(av) for an, av in fields(sv) if an in names and av}
            spec["resourceAttributes" if sn == 1 else "nonResourceAttributes"] = attrs
    return {"spec": spec}


_KINDS: dict[tuple[str, str], Callable[[bytes], dict[str, Any]]] = {
    ("v1", "ConfigMap"): _configmap,
    ("v1", "Secret"): _secret,
    ("v1", "Namespace"): _namespace,
    ("v1", "ServiceAccount"): _serviceaccount,
    ("v1", "Pod"): _pod,
    ("apps/v1", "Deployment"): _deployment,
    ("batch/v1", "Job"): _job,
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): _access_review,
}


def decode(body: bytes) -> dict[str, Any]:
    """A JSON-shaped object from a Kubernetes protobuf body (415 for kinds not handled; 400
    for bytes that are not protobuf)."""
    try:
        return _decode(body)
    except (UnicodeDecodeError, ValueError, IndexError, TypeError) as exc:
        raise statuses.bad_request(f"the protobuf body could not be decoded: {exc}") from None


def _decode(body: bytes) -> dict[str, Any]:
    if not body.startswith(MAGIC):
        raise statuses.bad_request("protobuf body without the k8s envelope")
    api_version = kind = ""
    raw = b""
    for n, v in fields(body[len(MAGIC) :]):
        if n == 1 and isinstance(v, bytes):
            for tn, tv in fields(v):
                if tn == 1:
                    api_version = _s(tv)
                elif tn == 2:
                    kind = _s(tv)
        elif n == 2 and isinstance(v, bytes):
            raw = v
    fn = _delete_options if kind == "DeleteOptions" else _KINDS.get((api_version, kind))
    if fn is None:
        raise statuses.ApiError(
            415,
            "UnsupportedMediaType",
            f"the local cluster accepts protobuf bodies only for {', '.join(k for _, k in _KINDS)}; "
            f"send {kind or 'this object'} as JSON (kubectl apply -f does)",
        )
    return {"apiVersion": api_version, "kind": kind, **fn(raw)}
