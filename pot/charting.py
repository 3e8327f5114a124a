"""Keep the Helm chart generated from its sources (one source of truth).

``crds/`` is the only place the CRDs are written; the chart carries copies.
The operator's RBAC rules are declared as data in ``pot.operator.rbac`` (next
to the code that needs them); the chart's ClusterRole renders the generated
``files/operator-rules.yaml``. ``python -m pot.charting sync`` (``make
chart``) rewrites both; ``check`` lists drift, and a test fails on any.

With ``watchNamespaces`` set, the chart grants those rules only in the watched
namespaces (RoleBindings to that ClusterRole); the cluster-scoped part of them
(``files/operator-cluster-rules.yaml``, also generated) is bound cluster-wide,
and so, in both modes, are the read-only node-usage rules
(``files/operator-node-usage-rules.yaml``: list and watch pods, to count what
other namespaces' pods hold on the nodes). Otherwise an operator told to watch
one namespace could still read every Secret in the cluster.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "pot-operator"
RULES_HEADER = "# Generated from pot.operator.rbac by `make chart`; do not edit.\n"
CLUSTER_RULES_HEADER = (
    "# Generated from pot.operator.rbac by `make chart`; do not edit.\n"
    "# The cluster-scoped resources of those rules: all the chart binds\n"
    "# cluster-wide when watchNamespaces is set.\n"
)
NODE_USAGE_HEADER = (
    "# Generated from pot.operator.rbac by `make chart`; do not edit.\n"
    "# Read-only, bound cluster-wide in both modes: every namespace's pods,\n"
    "# for the nodes' usage only.\n"
)
# Cluster-scoped resources (`kubectl api-resources --namespaced=false`) a rule may
# name; every other resource is namespaced, so a RoleBinding grants it.
CLUSTER_SCOPED = frozenset(
    {
        "nodes",
        "namespaces",
        "persistentvolumes",
        "customresourcedefinitions",
        "priorityclasses",
        "storageclasses",
        "runtimeclasses",
        "csinodes",
        "csidrivers",
        "volumeattachments",
        "ingressclasses",
        "clusterroles",
        "clusterrolebindings",
        "certificatesigningrequests",
        "apiservices",
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
        "tokenreviews",
        "subjectaccessreviews",
        "selfsubjectaccessreviews",
        "selfsubjectrulesreviews",
    }
)


def cluster_scoped_rules(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The part of ``rules`` on cluster-scoped resources (subresources follow theirs)."""
    out = []
    for rule in rules:
        kept = [r for r in rule["resources"] if r.split("/")[0] in CLUSTER_SCOPED]
        if kept:
            out.append({**rule, "resources": kept})
    return out


def _dump(rules: list[dict[str, Any]]) -> str:
    return yaml.safe_dump(rules, sort_keys=False, default_flow_style=None, width=1000)


def expected_files() -> dict[Path, str]:
    """Every generated chart file and the content it must have."""
    out: dict[Path, str] = {}
    for crd in sorted((ROOT / "crds").glob("*.yaml")):
        out[CHART / "crds" / crd.name] = crd.read_text()
    rbac = importlib.import_module("pot.operator.rbac")
    rules = [dict(rule) for rule in rbac.OPERATOR_RULES]
    out[CHART / "files" / "operator-rules.yaml"] = RULES_HEADER + _dump(rules)
    out[CHART / "files" / "operator-cluster-rules.yaml"] = CLUSTER_RULES_HEADER + _dump(
        cluster_scoped_rules(rules)
    )
    usage = [dict(rule) for rule in rbac.NODE_USAGE_RULES]
    out[CHART / "files" / "operator-node-usage-rules.yaml"] = NODE_USAGE_HEADER + _dump(usage)
    return out


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def drift() -> list[str]:
    """Chart files that differ from what their sources generate."""
    stale = [
        _shown(path)
        for path, text in expected_files().items()
        if not path.is_file() or path.read_text() != text
    ]
    known = {p.name for p in expected_files() if p.parent.name == "crds"}
    stale += [
        _shown(p) + " (no source in crds/)"
        for p in (CHART / "crds").glob("*.yaml")
        if p.name not in known
    ]
    return stale


def sync() -> list[str]:
    """Rewrite the generated chart files; return those that changed."""
    changed = []
    for path, text in expected_files().items():
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(_shown(path))
    return changed


def main(argv: list[str]) -> int:
    """``sync`` or ``check``."""
    if argv[:1] == ["sync"]:
        for name in sync():
            print(f"updated {name}")  # noqa: T201 (command output)
        return 0
    if argv[:1] == ["check"]:
        stale = drift()
        for name in stale:
            print(f"stale: {name}")  # noqa: T201
        return 1 if stale else 0
    print("usage: python -m pot.charting sync|check", file=sys.stderr)  # noqa: T201
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
