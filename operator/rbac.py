"""The operator's least-privilege RBAC rules, as data.

Three sets. ``OPERATOR_RULES`` is the ClusterRole: what the operator does in
every namespace it watches. ``NODE_USAGE_RULES`` is a read-only ClusterRole
bound cluster-wide in every mode: the pods of all namespaces, listed and
watched for the nodes' usage only (``usage_watching``), so that with
``watchNamespaces`` set a gang is never released onto GPUs that pods in
other namespaces hold. ``LEASE_RULES`` is a Role bound only in the
operator's own (release) namespace: its leader-election Lease. A Lease grant
in the ClusterRole would let the operator rewrite every Lease in the cluster,
kube-scheduler's and kube-controller-manager's leader leases and the nodes'
heartbeats included, when all it needs is its own (``operator/leadership.py``).

``pot.charting`` renders ``OPERATOR_RULES`` and ``NODE_USAGE_RULES`` into the
chart's ClusterRoles (charts/pot-operator/files/operator-rules.yaml and
operator-node-usage-rules.yaml); the chart's Role carries ``LEASE_RULES``.
Tests fail when any differs from this module. Pure.

Every verb below is one the code makes; nothing else is granted:

- kopf watches TrainingTasks, ValidatorSets, Pods, Nodes and Secrets, and the
  startup listing (``handlers._prime``) lists them: ``list``, ``watch``. kopf
  only has event handlers here, so it never patches what it watches (no
  finalizers, no progress annotations), and its own Event posting is off
  (``handlers.startup``): the status writes are ours, ``patch`` on ``/status``.
- Children are created, then patched to the desired state when they exist
  (``kubeapi.Client.apply``, the StatefulSet's JSON patch, the pods' gate
  release). A ValidatorSet's children and a task's gang Service that already
  exist are read first (``get``): only one the object controls is patched, and
  the peers.json ConfigMap tells which set the running replicas have. Only pods (gang restarts) and Volcano PodGroups (the previous
  attempt's) are deleted; everything else goes by ownerReference garbage
  collection. The stores' PersistentVolumeClaims are only created.
- Secrets are read (miner-key names and addresses, validator public keys:
  never logged); a ValidatorSet's keys Secret by ``get``. The one Secret
  written is a set's own ``<set>-accepted-keys``: ``create`` once, copied from
  its keys Secret when the membership is first accepted, ``immutable``, so
  never patched, and gone with the set by garbage collection (no ``patch``, no
  ``delete``). Its replicas mount it, so a key changed later in the user's
  Secret (refused) never reaches one that restarts. An existing one is read
  (``get``) to check whose it is and which keys it holds.
- Events: one core/v1 ``create`` per transition (``posting.post_event``).
- ``update`` of the CRs' ``finalizers`` subresource is never called: admission asks
  for it where OwnerReferencesPermissionEnforcement runs, as the children's
  ownerReferences set ``blockOwnerDeletion``.
- kopf watches CRDs to notice resources appearing, and namespaces to follow
  ``POT_WATCH_NAMESPACES`` patterns.
- ``usage_watching`` lists and watches pods in every namespace, for node
  usage only, when ``POT_WATCH_NAMESPACES`` narrows kopf's watches
  (``NODE_USAGE_RULES``).

No wildcard verbs or resources, no escalate/bind, no RBAC writes (the
validators need no API access, so the operator never creates Roles).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_WATCH = ["list", "watch"]
_APPLY = ["create", "patch"]
_OWN = ["create", "get", "patch"]  # a child that exists is read first: whose is it?

LEASE_NAME = "pot-operator"
"""The leader-election Lease (the default of ``POT_LEASE_NAME``, which the chart keeps)."""

OPERATOR_RULES: Sequence[Mapping[str, Any]] = (
    {"apiGroups": ["pot.dev"], "resources": ["trainingtasks", "validatorsets"], "verbs": [*_WATCH]},
    {
        "apiGroups": ["pot.dev"],
        "resources": ["trainingtasks/status", "validatorsets/status"],
        "verbs": ["patch"],
    },
    # Not a call the operator makes: every child's ownerReference sets blockOwnerDeletion
    # (names.owner_reference), and the OwnerReferencesPermissionEnforcement admission
    # plugin (on by default in OpenShift) refuses that create, 403, to a client that may
    # not update the owner's finalizers. The operator never writes finalizers.
    {
        "apiGroups": ["pot.dev"],
        "resources": ["trainingtasks/finalizers", "validatorsets/finalizers"],
        "verbs": ["update"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": [*_WATCH, *_APPLY, "delete"]},
    {
        "apiGroups": [""],
        "resources": ["services", "configmaps", "serviceaccounts"],
        "verbs": [*_OWN],
    },
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["create"]},
    # create: a ValidatorSet's <set>-accepted-keys, once (immutable: never patched).
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get", *_WATCH]},
    {"apiGroups": [""], "resources": ["nodes"], "verbs": [*_WATCH]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": [*_OWN]},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": [*_OWN]},
    # A gang queued on Volcano gets a PodGroup (minMember = nodes) per attempt.
    {
        "apiGroups": ["scheduling.volcano.sh"],
        "resources": ["podgroups"],
        "verbs": ["create", "delete"],
    },
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": [*_WATCH],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": [*_WATCH]},
)

NODE_USAGE_RULES: Sequence[Mapping[str, Any]] = (
    # Read-only and cluster-wide in both modes: node usage counts every namespace's pods.
    # No `get`: the usage watch only lists and watches. Nodes are in OPERATOR_RULES, whose
    # cluster-scoped part the chart binds cluster-wide in both modes too.
    {"apiGroups": [""], "resources": ["pods"], "verbs": [*_WATCH]},
)

LEASE_RULES: Sequence[Mapping[str, Any]] = (
    # A create names no object when RBAC checks it, so resourceNames cannot narrow it.
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": [LEASE_NAME],
        "verbs": ["get", "update"],
    },
)
