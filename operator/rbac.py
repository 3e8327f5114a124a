"""The operator's least-privilege RBAC rules, as data.

``pot.charting`` renders exactly these rules into the Helm chart's
ClusterRole (charts/pot-operator/files/operator-rules.yaml), so the chart
grants what this code needs and nothing more; a test fails on drift. Pure.

Why each rule: the custom resources are watched and their status written;
children are created, patched (gate release, drift repair) and deleted (gang
restarts); Secrets are only read (miner-key names and addresses, validator public keys:
never written, never logged); Nodes are read for gang fit; Events are
posted at every transition; a coordination Lease elects the active replica.
No wildcard verbs or resources, no escalate/bind, no RBAC writes (the
validators need no API access, so the operator never creates Roles).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_READ = ["get", "list", "watch"]
_OWN = ["get", "list", "watch", "create", "patch", "delete"]

OPERATOR_RULES: Sequence[Mapping[str, Any]] = (
    {
        "apiGroups": ["pot.dev"],
        "resources": ["trainingtasks", "validatorsets"],
        "verbs": [*_READ, "patch"],
    },
    {
        "apiGroups": ["pot.dev"],
        "resources": ["trainingtasks/status", "validatorsets/status"],
        "verbs": ["get", "patch"],
    },
    {
        "apiGroups": [""],
        "resources": [
            "pods",
            "services",
            "configmaps",
            "serviceaccounts",
            "persistentvolumeclaims",
        ],
        "verbs": _OWN,
    },
    {"apiGroups": [""], "resources": ["secrets"], "verbs": _READ},
    {"apiGroups": [""], "resources": ["nodes"], "verbs": _READ},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": _OWN},
    # A gang queued on Volcano gets a PodGroup (minMember = nodes) per attempt.
    {
        "apiGroups": ["scheduling.volcano.sh"],
        "resources": ["podgroups"],
        "verbs": ["create", "delete"],
    },
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": _OWN},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "update"],
    },
    # kopf watches CRDs to notice resources appearing, and lists namespaces
    # to follow POT_WATCH_NAMESPACES patterns.
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": _READ,
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": _READ},
)
