"""``pot task status NAME``: one TrainingTask's phase, conditions and progress.

Reads through kubectl's configuration (KUBECONFIG) with the official client,
so it works against any cluster the user's kubectl works against.
"""

from __future__ import annotations

import os
from typing import Any

import typer

from pot import errors

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)


def render(task: dict[str, Any]) -> str:
    """Human text of a TrainingTask's status."""
    meta, spec, status = task["metadata"], task.get("spec") or {}, task.get("status") or {}
    lines = [
        f"TrainingTask {meta['namespace']}/{meta['name']}",
        f"  phase:     {status.get('phase', 'Pending')}"
        + (f" ({status['reason']})" if status.get("reason") else ""),
    ]
    if status.get("message"):
        lines.append(f"  message:   {status['message']}")
    prog = status.get("progress") or {}
    if prog:
        lines.append(
            f"  progress:  step {prog.get('step', 0)}/{prog.get('totalSteps', '?')}, segments "
            f"{prog.get('segmentsCommitted', 0)} committed / {prog.get('segmentsVerified', 0)} verified / "
            f"{prog.get('segmentsRejected', 0)} rejected"
        )
    lines.append(
        f"  gang:      {(spec.get('resources') or {}).get('nodes', '?')} nodes, restarts {status.get('restarts', 0)}"
    )
    for cond in status.get("conditions") or []:
        lines.append(
            f"  {cond.get('type', ''):<14} {cond.get('status', ''):<7} {cond.get('reason', '')}: {cond.get('message', '')}"
        )
    settle = status.get("settlement") or {}
    if settle:
        lines.append(f"  settlement: tx {settle.get('txHash')} in block {settle.get('block')}")
        for payout in settle.get("payouts") or []:
            role = payout.get("role") or "payee"
            lines.append(f"    {role:<9}  {payout.get('address')}  {payout.get('amount')} wei")
        for address, amount in sorted((settle.get("slashed") or {}).items()):
            lines.append(f"    {'slashed':<9}  {address}  {amount} wei")
    return "\n".join(lines)


def _object_missing(body: object) -> bool:
    """Whether a 404's body is the API server's Status for a missing object (rather than
    a resource the server does not serve at all: plain "404 page not found")."""
    import json

    try:
        doc = json.loads(body) if isinstance(body, str | bytes) else None
    except ValueError:
        return False
    details = doc.get("details") if isinstance(doc, dict) else None
    return isinstance(details, dict) and bool(details.get("name"))


def _malformed(exc: Exception) -> str:
    """Why the kubernetes client could not read a kubeconfig, without quoting the file (it
    holds tokens): a YAML error gives its place, a wrong shape (a list where the client wants
    a mapping, ...) the type error the client ran into."""
    import yaml

    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"not YAML ({exc.problem}, line {mark.line + 1} column {mark.column + 1})"
    if isinstance(exc, yaml.YAMLError):
        return "not YAML"
    if isinstance(exc, TypeError | KeyError):  # a type or a key name, never a value
        return f"not a kubeconfig ({type(exc).__name__}: {exc})"
    return f"not a kubeconfig ({type(exc).__name__})"


@app.command("status")
def status(
    name: str = typer.Argument(..., help="TrainingTask name."),
    namespace: str = typer.Option("default", "-n", "--namespace", help="Namespace."),
) -> None:
    """Show a TrainingTask's phase, conditions and progress."""
    import yaml
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    path = os.environ.get("KUBECONFIG") or None
    where = f"KUBECONFIG={path}" if path else "~/.kube/config (KUBECONFIG is not set)"
    try:
        # KUBECONFIG as it is now: the client reads it once, when first imported.
        config.load_kube_config(config_file=path)
    except (ConfigException, OSError) as exc:
        raise errors.ClusterError(f"no usable kubeconfig in {where}: {exc}") from exc
    except (yaml.YAMLError, TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        # The client's loader walks the parsed file unchecked: a wrong shape is a TypeError...
        raise errors.ClusterError(f"no usable kubeconfig in {where}: {_malformed(exc)}") from None
    from urllib3.exceptions import HTTPError, MaxRetryError

    api = client.CustomObjectsApi()
    try:
        task = api.get_namespaced_custom_object(
            "pot.dev", "v1alpha1", namespace, "trainingtasks", name
        )
    except ApiException as exc:
        if exc.status == 404 and not _object_missing(exc.body):
            raise errors.ClusterError(
                "the cluster does not serve TrainingTasks (pot.dev/v1alpha1): "
                "are the CRDs installed (helm install charts/pot-operator)?"
            ) from None
        if exc.status == 404:
            raise errors.ConfigError(
                f'TrainingTask "{name}" not found in namespace "{namespace}"'
            ) from None
        raise errors.ClusterError(
            f"cannot read TrainingTask {namespace}/{name}: {exc.status} {exc.reason}"
        ) from exc
    except (OSError, HTTPError) as exc:
        # urllib3 gives up with MaxRetryError (not an OSError) when nothing answers.
        why = exc.reason if isinstance(exc, MaxRetryError) else exc
        host = client.Configuration.get_default_copy().host
        raise errors.ClusterError(f"API server {host} unreachable: {why}") from exc
    typer.echo(render(dict(task)))  # type: ignore[call-overload]
