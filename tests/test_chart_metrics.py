"""Every metric the chart's Grafana dashboard queries, and every ``pot_*`` metric name the
README and docs mention, is one a component actually serves.

The served names come from the components' own registries (operator, trainer,
validator, settlement sidecar), rendered as Prometheus exposes them: a Counter
``x`` is scraped as ``x_total``, a Histogram ``h`` as ``h_bucket``/``h_sum``/``h_count``.
A panel on a name nobody serves stays empty forever and nobody notices.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric

CHART = "charts/pot-operator"
_NAME = re.compile(r"\bpot_[a-z_]*[a-z]\b")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def scraped(families: Iterable[Metric]) -> set[str]:
    """The sample names a scrape of ``families`` yields (also with no samples yet)."""
    out: set[str] = set()
    for family in families:
        out.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
    return out


def served() -> set[str]:
    """Every pot_* sample name the operator, trainer, validator and sidecar serve."""
    # Importing these registers their metrics on the default registry.
    import pot.operator.metrics
    import pot.trainer.publishing
    import pot.trainer.training  # noqa: F401
    from pot.settlement import sending
    from pot.validator import api

    names = scraped(REGISTRY.collect())
    names |= scraped(sending.Metrics(CollectorRegistry()).registry.collect())
    core = SimpleNamespace(
        view=0, last_exec=0, h=0, pending=(), is_primary=False, rejected={}, stats={}
    )
    node: Any = SimpleNamespace(core=core, ready=lambda: (False, ""))
    names |= scraped(api._Metrics(node).collect())
    return {n for n in names if n.startswith("pot_")}


@pytest.fixture(scope="module")
def served_names() -> set[str]:
    return served()


def dashboard_queries(repo_root: Path) -> list[tuple[str, str]]:
    doc = json.loads((repo_root / CHART / "files" / "grafana-dashboard.json").read_text())
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]


def test_served_names_are_found(served_names: set[str]) -> None:
    # The collection itself must work, or every check below passes vacuously.
    for name in (
        "pot_operator_reconciles_total",
        "pot_operator_reconcile_seconds_bucket",
        "pot_trainer_segments_total",
        "pot_validator_view",
        "pot_validator_rejected_total",
        "pot_settlement_intents_total",
    ):
        assert name in served_names
    assert "pot_validator_segments_total" not in served_names
    assert "pot_operator_reconciles" not in served_names  # a counter is scraped as _total


def test_dashboard_queries_served_metrics(repo_root: Path, served_names: set[str]) -> None:
    queries = dashboard_queries(repo_root)
    assert len(queries) >= 6
    for title, expr in queries:
        used = _NAME.findall(expr)
        assert used, f"panel {title!r}: no pot_ metric in {expr!r}"
        unknown = sorted(set(used) - served_names)
        assert not unknown, f"panel {title!r} queries {unknown}, which nothing serves"


def test_docs_name_served_metrics(repo_root: Path, served_names: set[str]) -> None:
    for doc in [repo_root / "README.md", *sorted((repo_root / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        # A name ending in "_" is a prefix (pot_operator_*), not a metric.
        for name in set(_NAME.findall(text)):
            if text[text.index(name) + len(name) :].startswith(("_*", "*")):
                continue
            assert name in served_names, f"{doc.name} names metric {name}, which nothing serves"


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    ok = all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())
    for expr in selector.get("matchExpressions") or []:
        assert expr["operator"] == "In", expr  # the chart uses nothing else
        ok = ok and labels.get(expr["key"]) in expr["values"]
    return ok


def _example(repo_root: Path, name: str) -> dict[str, Any]:
    import yaml

    doc: dict[str, Any] = yaml.safe_load((repo_root / "examples" / name).read_text())
    doc["metadata"].update(namespace="farm-a", uid="0d2a1c4e-0000-4000-8000-000000000000")
    return doc


@pytest.mark.parametrize("watch", [(), ("farm-a", "farm-b")])
def test_prometheus_scrapes_the_pods_the_dashboard_reads(
    repo_root: Path, helm_template: Any, watch: tuple[str, ...]
) -> None:
    """With serviceMonitor.enabled, Prometheus finds validators, settlement sidecars and
    trainers (the dashboard's panels), not only the operator: a PodMonitor selects the
    pods the operator builds, on the named ports that serve /metrics."""
    from pot.operator import builders_trainers, builders_validators
    from pot.operator.config import Config

    # kube-prometheus-stack selects monitors by its release label: both must carry it.
    args = ["--set", "metrics.serviceMonitor.enabled=true"]
    args += ["--set", "metrics.serviceMonitor.labels.release=kube-prometheus-stack"]
    if watch:
        args += ["--set", "watchNamespaces={" + ",".join(watch) + "}"]
    docs = helm_template("pot", "pot-system", *args)
    monitors = [d for d in docs if d["kind"] in ("PodMonitor", "ServiceMonitor")]
    assert len(monitors) == 2
    for doc in monitors:
        assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack", doc["kind"]
    (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    spec = monitor["spec"]
    if watch:
        assert spec["namespaceSelector"] == {"matchNames": list(watch)}
    else:
        assert spec["namespaceSelector"] == {"any": True}
    scraped_ports = {e["port"] for e in spec["podMetricsEndpoints"] if e["path"] == "/metrics"}

    config = Config()
    trainer = builders_trainers.build_pod_spec(_example(repo_root, "task.yaml"), 0, 0, config)
    sts = builders_validators.build_statefulset_spec(
        _example(repo_root, "validatorset.yaml"), config, "{}"
    )
    validator = sts["spec"]["template"]
    # The ports each pod serves /metrics on (docs/protocol.md "Ports").
    metrics_ports = {
        "trainer": builders_trainers.STORE_PORT,
        "validator": builders_validators.HTTP_PORT,
        "settlement": builders_validators.SETTLEMENT_PORT,
    }
    for pod in (trainer, validator):
        assert _selects(spec["selector"], pod["metadata"]["labels"]), pod["metadata"]
        for container in pod["spec"]["containers"]:
            named = {p["containerPort"]: p["name"] for p in container["ports"]}
            port = metrics_ports[container["name"]]
            assert named.get(port) in scraped_ports, (container["name"], named, scraped_ports)
