"""Admission: what is checked and changed before an object is stored.

* every object's name: an RFC 1123 subdomain (a label for namespaces), 422
  naming ``metadata.name`` otherwise;
* custom resources: pruned, defaulted and validated against their CRD's
  structural schema (CEL rules included) by :mod:`pot.schemas`, the one
  implementation the operator and the tests share; ObjectMeta is the
  server's and never pruned by a CRD schema. ``fieldValidation=Strict``
  refuses unknown fields (400, "strict decoding error"), ``Warn`` returns them
  as warnings, ``Ignore`` drops them silently (API concepts, "Field
  validation");
* CustomResourceDefinitions: the rules that keep their resources servable,
  and the status that says they are (Established at once).
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from pot import schemas
from pot.localcluster import statuses
from pot.localcluster.resources import ResourceType
from pot.localcluster.storage import Obj

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_META_STRINGS = ("name", "generateName", "namespace", "resourceVersion", "uid")
_REF_STRINGS = ("apiVersion", "kind", "name", "uid")


def check_meta(t: ResourceType, meta: dict[str, Any]) -> None:
    """The ObjectMeta fields the server relies on have the types the real decoder insists on
    (400 BadRequest otherwise): a list of labels or an ownerReference that is no object would
    otherwise fail requests, the garbage collector or the replay of the log at start."""

    def refuse(field: str, got: Any, want: str) -> statuses.ApiError:
        what = "null" if got is None else type(got).__name__
        return statuses.bad_request(
            f'{t.kind} in version "{t.version}" cannot be handled as a {t.kind}: json: cannot '
            f"unmarshal {what} into Go struct field ObjectMeta.metadata.{field} of type {want}"
        )

    for key in _META_STRINGS:
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise refuse(key, meta[key], "string")
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise refuse(key, value, "map[string]string")
        for k, v in list(value.items()):
            if v is None:
                value[k] = ""  # as Go decodes a null map value
            elif not isinstance(v, str):
                raise refuse(key, v, "string")
    finalizers = meta.get("finalizers")
    if finalizers is not None and (
        not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers)
    ):
        raise refuse("finalizers", finalizers, "[]string")
    refs = meta.get("ownerReferences")
    if refs is None:
        return
    if not isinstance(refs, list):
        raise refuse("ownerReferences", refs, "[]v1.OwnerReference")
    causes = []
    for i, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise refuse("ownerReferences", ref, "v1.OwnerReference")
        for key in _REF_STRINGS:
            value = ref.get(key)
            if value is not None and not isinstance(value, str):
                raise refuse(f"ownerReferences.{key}", value, "string")
            if not value:
                causes.append(
                    statuses.Cause(
                        f"metadata.ownerReferences[{i}].{key}",
                        "FieldValueRequired" if key != "uid" else "FieldValueInvalid",
                        "Required value"
                        if key != "uid"
                        else 'Invalid value: "": uid must not be empty',
                    )
                )
        for key in ("controller", "blockOwnerDeletion"):
            if ref.get(key) is not None and not isinstance(ref[key], bool):
                raise refuse(f"ownerReferences.{key}", ref[key], "bool")
    if causes:
        raise statuses.invalid(t.kind, t.group, str(meta.get("name") or ""), causes)


IMMORTAL_NAMESPACES = ("default", "kube-system", "kube-public")
"""What the NamespaceLifecycle admission plugin never lets anyone delete."""


def check_delete(t: ResourceType, name: str) -> None:
    """403 for a namespace that may not be deleted, as the real server answers."""
    if (t.group, t.resource) == ("", "namespaces") and name in IMMORTAL_NAMESPACES:
        raise statuses.ApiError(
            403,
            "Forbidden",
            f'namespaces "{name}" is forbidden: this namespace may not be deleted',
            name=name,
            kind="namespaces",
        )


def check_name(t: ResourceType, obj: Obj) -> None:
    name = obj["metadata"].get("name", "")
    namespaces = t.resource == "namespaces"
    pattern, limit = (_LABEL, 63) if namespaces else (_SUBDOMAIN, 253)
    if not name:
        cause = statuses.Cause(
            "metadata.name",
            "FieldValueRequired",
            "Required value: name or generateName is required",
        )
    elif len(name) > limit or not pattern.match(name):
        cause = statuses.Cause(
            "metadata.name",
            "FieldValueInvalid",
            f'Invalid value: "{name}": a lowercase RFC 1123 {"label" if namespaces else "subdomain"} '
            "must consist of lower case alphanumeric characters, '-' or '.', and must start and end "
            "with an alphanumeric character",
        )
    else:
        return
    raise statuses.invalid(t.kind, t.group, name, [cause])


def admit_custom(
    t: ResourceType, obj: Obj, old: Obj | None, field_validation: str
) -> tuple[Obj, list[str]]:
    """The pruned and defaulted custom resource and its warnings (422 when invalid)."""
    assert t.schema is not None
    head = {k: obj[k] for k in ("apiVersion", "kind", "metadata") if k in obj}
    body = {k: v for k, v in obj.items() if k not in head}
    old_body = {k: v for k, v in old.items() if k not in head} if old is not None else None
    cleaned, found = schemas.admit(t.schema, body, old=old_body)
    unknown = sorted(_dropped(body, cleaned))
    if unknown and field_validation == "Strict":
        raise statuses.bad_request(
            f'{t.kind} in version "{t.version}" cannot be handled as a {t.kind}: '
            "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown)
        )
    warnings = [f'unknown field "{u}"' for u in unknown] if field_validation == "Warn" else []
    if found:
        name = obj["metadata"].get("name", "")
        causes = [statuses.Cause(c.field, c.reason, c.message) for c in found]
        raise statuses.invalid(t.kind, t.group, name, causes)
    return {**head, **cleaned}, warnings


def _dropped(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Fields present in ``before`` but pruned from ``after`` (for strict field validation)."""
    out: list[str] = []
    if isinstance(before, dict) and isinstance(after, dict):
        for k, v in before.items():
            path = f"{prefix}.{k}" if prefix else k
            if k not in after:
                out.append(path)
            else:
                out.extend(_dropped(v, after[k], path))
    elif isinstance(before, list) and isinstance(after, list):
        for i, (b, a) in enumerate(zip(before, after, strict=False)):
            out.extend(_dropped(b, a, f"{prefix}[{i}]"))
    return out


def check_crd(crd: Obj, old: Obj | None = None) -> None:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    name = crd["metadata"].get("name", "")
    causes = []
    if not spec.get("group"):
        causes.append(statuses.Cause("spec.group", "FieldValueRequired", "Required value"))
    if not names.get("plural"):
        causes.append(statuses.Cause("spec.names.plural", "FieldValueRequired", "Required value"))
    if not names.get("kind"):
        causes.append(statuses.Cause("spec.names.kind", "FieldValueRequired", "Required value"))
    if spec.get("group") and names.get("plural") and name != f"{names['plural']}.{spec['group']}":
        causes.append(
            statuses.Cause(
                "metadata.name",
                "FieldValueInvalid",
                f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
            )
        )
    versions = spec.get("versions") or []
    if not versions or sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(
            statuses.Cause(
                "spec.versions",
                "FieldValueInvalid",
                "Invalid value: must have exactly one version marked as storage version",
            )
        )
    if old is not None:
        # Immutable once Established (at once here): stored objects are keyed by namespace or
        # not, and a new scope would strand them.
        old_spec = old.get("spec") or {}
        for field, now, before in (
            (
                "spec.scope",
                spec.get("scope") or "Namespaced",
                old_spec.get("scope") or "Namespaced",
            ),
            ("spec.names.kind", names.get("kind"), (old_spec.get("names") or {}).get("kind")),
        ):
            if now != before:
                causes.append(
                    statuses.Cause(
                        field, "FieldValueInvalid", f'Invalid value: "{now}": field is immutable'
                    )
                )
    if causes:
        raise statuses.invalid("CustomResourceDefinition", "apiextensions.k8s.io", name, causes)


def crd_status(crd: Obj) -> None:
    """CRDs are Established at once: names accepted, storage version recorded."""
    spec = crd.get("spec") or {}
    names = dict(spec.get("names") or {})
    names.setdefault("singular", str(names.get("kind", "")).lower())
    names.setdefault("listKind", f"{names.get('kind', '')}List")
    stored = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
    ts = ((crd.get("status") or {}).get("conditions") or [{}])[0].get(
        "lastTransitionTime"
    ) or _now()
    crd["status"] = {
        "acceptedNames": names,
        "storedVersions": sorted(
            set((crd.get("status") or {}).get("storedVersions") or []) | set(stored)
        ),
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": ts,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": ts,
            },
        ],
    }
