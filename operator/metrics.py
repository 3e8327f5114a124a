"""Prometheus metrics of the operator (``pot_operator_*``, DESIGN §7).

The chart's Grafana dashboard reads ``pot_operator_tasks`` (by phase) and
``pot_operator_reconcile_seconds``; alerts read the error counter. Kept in
one module so names are defined once.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "pot_operator_reconciles_total", "Reconciles run, by kind and outcome.", ["kind", "outcome"]
)
RECONCILE_SECONDS = Histogram(
    "pot_operator_reconcile_seconds",
    "Wall time of one reconcile.",
    ["kind"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ERRORS = Counter(
    "pot_operator_errors_total",
    "Reconciles that raised, by kind and error class.",
    ["kind", "error"],
)
TASKS = Gauge("pot_operator_tasks", "TrainingTasks by phase.", ["phase"])
VSETS = Gauge("pot_operator_validatorsets", "ValidatorSets by phase.", ["phase"])
API_REQUESTS = Counter(
    "pot_operator_api_requests_total",
    "Requests to the Kubernetes API, by verb and resource.",
    ["verb", "resource"],
)
GANG_RELEASES = Counter(
    "pot_operator_gang_releases_total",
    "Gangs released together (created ungated after the fit count, or all gates removed).",
)
GANG_RESTARTS = Counter(
    "pot_operator_gang_restarts_total", "Whole-gang restarts after a member failed."
)
QUEUE_DEPTH = Gauge("pot_operator_queue_depth", "Objects waiting for a reconcile.")
LEADER = Gauge("pot_operator_leader", "1 while this replica holds the leader Lease.")
