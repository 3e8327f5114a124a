"""The few protobuf request bodies kubectl sends, decoded to JSON objects.

kubectl 1.37's typed commands (``kubectl create configmap|secret|namespace|
serviceaccount``) and helm's deletes (DeleteOptions) send
``application/vnd.kubernetes.protobuf`` bodies, and
client-go has no fallback to JSON on 415 for protobuf (only for CBOR). So the
server decodes the Kubernetes protobuf envelope (``k8s\\x00`` + a
``runtime.Unknown``) and the generated messages of those kinds, field numbers
taken from ``k8s.io/api/core/v1/generated.proto``. Every other kind gets a
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


_KINDS: dict[tuple[str, str], Callable[[bytes], dict[str, Any]]] = {
    ("v1", "ConfigMap"): _configmap,
    ("v1", "Secret"): _secret,
    ("v1", "Namespace"): _namespace,
    ("v1", "ServiceAccount"): _serviceaccount,
}


def decode(body: bytes) -> dict[str, Any]:
    """A JSON-shaped object from a Kubernetes protobuf body (415 for kinds not handled)."""
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
