"""REST semantics of the API server: create, get, list, update, patch, delete.

Pure of HTTP: :mod:`apiserver` parses requests into these calls and renders
what they return or raise. Every behaviour real clients depend on lives here,
following the API conventions (sig-architecture/api-conventions.md):

* ``metadata.resourceVersion`` is the store's global revision; an update
  carrying a stale one gets 409 Conflict (optimistic concurrency);
* ``metadata.generation`` starts at 1 and increases when the desired state
  changes: for kinds with a ``status`` sub-resource, anything but metadata and
  status; the main resource ignores ``status`` and the sub-resource ignores
  everything else (the spec/status split controllers rely on);
* a delete of an object with finalizers only sets ``deletionTimestamp``; the
  object goes when the last finalizer is removed. ``propagationPolicy``
  Orphan/Foreground add the ``orphan``/``foregroundDeletion`` finalizers the
  garbage collector (:mod:`collecting`) acts on;
* custom resources are pruned, defaulted and validated against their CRD's
  structural schema by :mod:`pot.schemas` via :mod:`admission` (CEL rules included): 422 Invalid
  with one cause per field, as the real server answers.
"""

from __future__ import annotations

import copy
import datetime
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pot.localcluster import admission, applying, defaulting, immutability, patching, statuses
from pot.localcluster.resources import Registry, ResourceType
from pot.localcluster.storage import Key, Obj, Store

_SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class WriteOptions:
    """Query parameters every write takes."""

    dry_run: bool = False
    manager: str = ""
    field_validation: str = "Strict"
    force: bool = False


@dataclass(slots=True)
class Outcome:
    """The stored (or would-be stored) object and the warnings to send back."""

    obj: Obj
    warnings: list[str]
    created: bool = False


def target(t: ResourceType, name: str) -> statuses.Target:
    return statuses.Target(t.resource, t.group, name)


def present(t: ResourceType, obj: Obj) -> Obj:
    """The stored object as the requested version shows it."""
    if obj.get("apiVersion") == t.api_version and obj.get("kind") == t.kind:
        return obj
    return {**obj, "apiVersion": t.api_version, "kind": t.kind}


class Cluster:
    """The API's behaviour over a :class:`Store`, for every served type."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self.on_change: list[Callable[[], None]] = []
        """Called after every commit (the garbage collector's wake-up)."""
        self.admit_hooks: list[Callable[[ResourceType, Obj, Obj | None], None]] = []
        for crd in store.objects("apiextensions.k8s.io", "customresourcedefinitions"):
            registry.set_crd(crd)
        for ns in _SYSTEM_NAMESPACES:
            if store.get(("", "namespaces", "", ns)) is None:
                self._commit(("", "namespaces", "", ns), self._new_namespace(ns))
        store.flush()

    # -- helpers --------------------------------------------------------------

    def _new_namespace(self, name: str) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": now(),
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }

    def _commit(self, key: Key, obj: Obj) -> Obj:
        out = self.store.put(key, obj)
        for fn in self.on_change:
            fn()
        return out

    def _remove(self, key: Key) -> Obj | None:
        out = self.store.delete(key)
        if out is not None and key[:2] == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._drop_crd(out)
        for fn in self.on_change:
            fn()
        return out

    def key(self, t: ResourceType, namespace: str, name: str) -> Key:
        return (t.group, t.resource, namespace if t.namespaced else "", name)

    def get(self, t: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.get(self.key(t, namespace, name))
        if obj is None:
            raise statuses.not_found(target(t, name))
        return present(t, obj)

    def objects(self, t: ResourceType, namespace: str | None) -> list[Obj]:
        return [
            present(t, o)
            for o in self.store.objects(t.group, t.resource, namespace if t.namespaced else None)
        ]

    def _check_body(self, t: ResourceType, body: Any, namespace: str, name: str | None) -> Obj:
        if not isinstance(body, dict):
            raise statuses.bad_request(
                f"the body of the request was in an unknown format: expected a {t.kind} object"
            )
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if api_version and api_version != t.api_version:
            raise statuses.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version ({t.api_version})"
            )
        if kind and kind != t.kind:
            raise statuses.bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({t.kind})"
            )
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = t.api_version, t.kind
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise statuses.bad_request("metadata must be an object")
        admission.check_meta(t, meta)
        if t.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise statuses.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if name is not None and meta.get("name") and meta["name"] != name:
            raise statuses.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        if name is not None:
            meta["name"] = name
        return obj

    def _check_namespace(self, t: ResourceType, namespace: str, name: str = "") -> None:
        if not t.namespaced:
            return
        ns = self.store.get(("", "namespaces", "", namespace))
        if ns is None:
            raise statuses.ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                name=namespace,
                kind="namespaces",
            )
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            raise statuses.ApiError(
                403,
                "Forbidden",
                f'{target(t, name).qualified} "{name}" is forbidden: unable to create new content '
                f"in namespace {namespace} because it is being terminated",
                name=name,
                group=t.group or None,
                kind=t.resource,
                causes=[
                    statuses.Cause(
                        "metadata.namespace",
                        "NamespaceTerminating",
                        f"namespace {namespace} is being terminated",
                    )
                ],
            )

    def _admit(
        self, t: ResourceType, obj: Obj, old: Obj | None, opts: WriteOptions
    ) -> tuple[Obj, list[str]]:
        """Names of every object; schema of custom resources; CRDs' own rules."""
        admission.check_name(t, obj)
        for hook in self.admit_hooks:  # (the API server's RBAC escalation check)
            hook(t, obj, old)
        warnings: list[str] = []
        if t.schema is not None:
            obj, warnings = admission.admit_custom(t, obj, old, opts.field_validation)
        if t.resource == "customresourcedefinitions":
            admission.check_crd(obj, old)
        return obj, warnings

    def _generation_changed(self, t: ResourceType, old: Obj, new: Obj) -> bool:
        skip = {"metadata", "status"} if t.has_status else {"metadata"}
        return {k: v for k, v in old.items() if k not in skip} != {
            k: v for k, v in new.items() if k not in skip
        }

    def _allocate_ip(self) -> str:
        used = {
            str((s.get("spec") or {}).get("clusterIP")) for s in self.store.objects("", "services")
        }
        return defaulting.allocate_ip(used)

    # -- create ---------------------------------------------------------------

    def create(self, t: ResourceType, namespace: str, body: Any, opts: WriteOptions) -> Outcome:
        obj = self._check_body(t, body, namespace, None)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)
            )
        self._check_namespace(t, namespace, meta.get("name", ""))
        key = self.key(t, namespace, meta.get("name", ""))
        if meta.get("name") and self.store.get(key) is not None:
            raise statuses.already_exists(target(t, meta["name"]))
        if meta.get("resourceVersion") and not opts.dry_run:
            # etcd3's store refuses it (storage.ErrResourceVersionSetOnCreate), a 500.
            raise statuses.ApiError(
                500,
                "InternalError",
                "Internal error occurred: resourceVersion should not be set on objects to be created",
            )
        for drop in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ):
            meta.pop(drop, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        if t.has_status or t.is_custom:
            meta["generation"] = 1
        if t.has_status and t.resource not in ("nodes",):
            obj.pop("status", None)
        if (t.group, t.resource) == ("", "pods"):
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        if (t.group, t.resource) == ("", "namespaces"):
            obj.setdefault("spec", {})["finalizers"] = ["kubernetes"]
            obj["status"] = {"phase": "Active"}
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
        if not t.is_custom:
            defaulting.apply_defaults(t.group, t.resource, obj, self._allocate_ip)
        obj, warnings = self._admit(t, obj, None, opts)
        if t.resource == "customresourcedefinitions":
            admission.crd_status(obj)
        applying.record_update(None, obj, manager=opts.manager, api_version=t.api_version)
        if opts.dry_run:
            return Outcome(obj, warnings, created=True)
        obj = self._commit(key, obj)
        if t.resource == "customresourcedefinitions":
            self.registry.set_crd(obj)
        return Outcome(present(t, obj), warnings, created=True)

    # -- update ---------------------------------------------------------------

    def update(
        self,
        t: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        *,
        opts: WriteOptions,
        sub: str = "",
    ) -> Outcome:
        obj = self._check_body(t, body, namespace, name)
        key = self.key(t, namespace, name)
        old = self.store.get(key)
        if old is None:
            raise statuses.not_found(target(t, name))
        rv = obj["metadata"].get("resourceVersion")
        if rv and rv != old["metadata"].get("resourceVersion"):
            raise statuses.conflict(target(t, name))
        if not rv and t.is_custom:
            raise statuses.invalid(
                t.kind,
                t.group,
                name,
                [
                    statuses.Cause(
                        "metadata.resourceVersion",
                        "FieldValueInvalid",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )
        return self.replace(t, key, old, obj, opts=opts, sub=sub)

    def replace(
        self, t: ResourceType, key: Key, old: Obj, new: Obj, *, opts: WriteOptions, sub: str = ""
    ) -> Outcome:
        """Commit ``new`` over ``old`` with the metadata rules of an update."""
        meta, old_meta = new.setdefault("metadata", {}), old["metadata"]
        for keep in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "name",
            "namespace",
        ):
            if keep in old_meta:
                meta[keep] = old_meta[keep]
            else:
                meta.pop(keep, None)
        if sub == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
            meta = new["metadata"]
        elif t.has_status and sub != "binding":  # a binding sets nodeName and PodScheduled
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        if (t.group, t.resource) == ("", "namespaces") and sub != "finalize":
            new["spec"] = old.get("spec", {})
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise statuses.invalid(
                    t.kind,
                    t.group,
                    meta.get("name", ""),
                    [
                        statuses.Cause(
                            "metadata.finalizers",
                            "FieldValueForbidden",
                            "Forbidden: no new finalizers can be added if the object is being deleted",
                        )
                    ],
                )
        if not t.is_custom and sub != "status":
            defaulting.apply_defaults(t.group, t.resource, new, self._allocate_ip, old)
            if sub != "binding":  # a binding sets a pod's nodeName
                immutability.check_update(t, new, old)
        new, warnings = self._admit(t, new, old, opts)
        if self._generation_changed(t, old, new) and "generation" in meta:
            meta["generation"] = int(meta["generation"]) + 1
        if t.resource == "customresourcedefinitions":
            admission.crd_status(new)
        applying.record_update(
            old, new, manager=opts.manager, api_version=t.api_version, subresource=sub
        )
        if _same(old, new):
            return Outcome(present(t, old), warnings)
        if opts.dry_run:
            return Outcome(present(t, new), warnings)
        if _delete_during_update(t, old, new):
            meta["resourceVersion"] = old_meta.get("resourceVersion")
            done = self._remove(key)
            return Outcome(present(t, done or new), warnings)
        new = self._commit(key, new)
        if t.resource == "customresourcedefinitions":
            self.registry.set_crd(new)
        return Outcome(present(t, new), warnings)

    # -- patch ----------------------------------------------------------------

    def patch(
        self,
        t: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        patch: Any,
        *,
        opts: WriteOptions,
        sub: str = "",
    ) -> Outcome:
        key = self.key(t, namespace, name)
        old = self.store.get(key)
        base = present(t, old) if old is not None else None
        if content_type == "application/apply-patch+yaml":
            if not isinstance(patch, dict):
                raise statuses.bad_request("apply patch must be an object")
            if not opts.manager:
                raise statuses.bad_request(
                    "PATCH request using server-side apply must have a fieldManager"
                )
            if base is None:
                live = self._check_body(t, patch, namespace, name)
                live = {
                    "apiVersion": live["apiVersion"],
                    "kind": live["kind"],
                    "metadata": {"name": name},
                }
            else:
                live = base
            cfg = self._check_body(t, patch, namespace, name)
            merged = applying.apply(
                live,
                cfg,
                manager=opts.manager,
                force=opts.force,
                api_version=t.api_version,
                subresource=sub,
            )
            if base is None:
                # The manager is already recorded by applying.apply: create with none.
                merged.get("metadata", {}).pop("resourceVersion", None)
                return self.create(
                    t, namespace, merged, WriteOptions(opts.dry_run, "", opts.field_validation)
                )
            return self.replace(
                t,
                key,
                old or {},
                merged,
                opts=WriteOptions(opts.dry_run, "", opts.field_validation),
                sub=sub,
            )
        if base is None:
            raise statuses.not_found(target(t, name))
        if content_type == "application/json-patch+json":
            new = patching.json_patch(base, patch)
        elif content_type == "application/merge-patch+json":
            if not isinstance(patch, dict):
                raise statuses.bad_request("merge patch must be an object")
            new = patching.json_merge(base, patch)
        elif content_type == "application/strategic-merge-patch+json":
            if t.is_custom:
                raise statuses.ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                )
            if not isinstance(patch, dict):
                raise statuses.bad_request("strategic merge patch must be an object")
            new = patching.strategic_merge(base, patch)
        else:
            raise statuses.ApiError(
                415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}"
            )
        if not isinstance(new, dict):
            raise statuses.bad_request("the patch does not produce an object")
        new = self._check_body(t, new, namespace, name)
        rv = new["metadata"].get("resourceVersion")
        if rv and old is not None and rv != old["metadata"].get("resourceVersion"):
            raise statuses.conflict(target(t, name))
        return self.replace(t, key, old or {}, new, opts=opts, sub=sub)

    # -- delete ---------------------------------------------------------------

    def delete(
        self,
        t: ResourceType,
        namespace: str,
        name: str,
        *,
        policy: str | None = None,
        grace: int | None = None,
        preconditions: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> Obj:
        admission.check_delete(t, name)
        key = self.key(t, namespace, name)
        old = self.store.get(key)
        if old is None:
            raise statuses.not_found(target(t, name))
        meta = old["metadata"]
        pre = preconditions if isinstance(preconditions, dict) else {}
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise statuses.conflict(
                target(t, name),
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
            raise statuses.conflict(
                target(t, name),
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
            )
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        graceful = (t.group, t.resource) == ("", "namespaces")
        if (t.group, t.resource) == ("", "pods"):
            spec, phase = old.get("spec") or {}, (old.get("status") or {}).get("phase")
            period = (
                grace if grace is not None else _seconds(spec.get("terminationGracePeriodSeconds"))
            )
            grace = period  # issue 4: deletionGracePeriodSeconds is the pod's own grace period
            graceful = (
                bool(spec.get("nodeName")) and phase not in ("Succeeded", "Failed") and period > 0
            )
            if meta.get("deletionTimestamp") and grace == 0:
                graceful = False
        if dry_run:
            return present(t, old)
        if finalizers or graceful:
            # Only a graceful pod deletion waits; everything else (a namespace, an object
            # held by finalizers) gets deletionGracePeriodSeconds 0, as on a real server.
            period = grace if graceful and grace is not None and t.resource == "pods" else 0
            new = copy.deepcopy(old)
            nm = new["metadata"]
            nm["finalizers"] = finalizers
            if not finalizers:
                nm.pop("finalizers")
            if not nm.get("deletionTimestamp"):
                nm["deletionTimestamp"] = now()
                nm["deletionGracePeriodSeconds"] = period
                if "generation" in nm:
                    nm["generation"] = int(nm["generation"]) + 1
            elif grace is not None and grace < int(nm.get("deletionGracePeriodSeconds") or 0):
                # A shorter grace period replaces the pending one (the kubelet's grace=0
                # confirmation of a pod still held by finalizers).
                nm["deletionGracePeriodSeconds"] = max(grace, 0)
            if (t.group, t.resource) == ("", "namespaces"):
                new.setdefault("status", {})["phase"] = "Terminating"
            if new == old:
                return present(t, old)
            return present(t, self._commit(key, new))
        done = self._remove(key)
        return present(t, done or old)

    def _drop_crd(self, crd: Obj) -> None:
        """A CRD's deletion removes its objects (the real server waits on their finalizers)."""
        spec = crd.get("spec") or {}
        group, plural = spec.get("group", ""), (spec.get("names") or {}).get("plural", "")
        for obj in list(self.store.objects(group, plural)):
            meta = obj.get("metadata") or {}
            self.store.delete((group, plural, meta.get("namespace", ""), meta.get("name", "")))
        self.registry.drop_crd((crd.get("metadata") or {}).get("name", ""))


def _seconds(value: Any) -> int:
    """A pod's ``terminationGracePeriodSeconds`` (30 when unset; built-ins are stored as given,
    so a value that is no number must not fail the deletion, nor the collector's)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return 30
    try:
        return max(int(value), 0)
    except ValueError:
        return 30


def _delete_during_update(t: ResourceType, old: Obj, new: Obj) -> bool:
    """Whether an update completes a pending deletion (the real store's ShouldDeleteDuringUpdate).

    Only once the last finalizer is gone and no grace period is running: an update of a pod
    in its grace period (the kubelet's status) or of a namespace whose content is still being
    deleted (``spec.finalizers``) keeps the object.
    """
    old_meta, meta = old.get("metadata") or {}, new.get("metadata") or {}
    if not old_meta.get("deletionTimestamp") or meta.get("finalizers"):
        return False
    if int(old_meta.get("deletionGracePeriodSeconds") or 0) > 0:
        return False
    return not (
        (t.group, t.resource) == ("", "namespaces") and (new.get("spec") or {}).get("finalizers")
    )


def _same(old: Obj, new: Obj) -> bool:
    """An update that changes nothing but bookkeeping is a no-op (no new resourceVersion)."""

    def strip(o: Obj) -> Obj:
        m = {
            k: v
            for k, v in (o.get("metadata") or {}).items()
            if k not in ("resourceVersion", "managedFields")
        }
        return {**o, "metadata": m}

    return strip(old) == strip(new)
