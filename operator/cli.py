"""``pot task status NAME``: one TrainingTask's phase, conditions and progress.

Reads through kubectl's configuration (KUBECONFIG) with the official client,
so it works against any cluster the user's kubectl works against.
"""

from __future__ import annotations

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
    return "\n".join(lines)


@app.command("status")
def status(
    name: str = typer.Argument(..., help="TrainingTask name."),
    namespace: str = typer.Option("default", "-n", "--namespace", help="Namespace."),
) -> None:
    """Show a TrainingTask's phase, conditions and progress."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_kube_config()
    except (ConfigException, OSError) as exc:
        raise errors.ClusterError(f"no usable kubeconfig: {exc}") from exc
    api = client.CustomObjectsApi()
    try:
        task = api.get_namespaced_custom_object(
            "pot.dev", "v1alpha1", namespace, "trainingtasks", name
        )
    except ApiException as exc:
        if exc.status == 404:
            raise errors.ConfigError(
                f'TrainingTask "{name}" not found in namespace "{namespace}"'
            ) from None
        raise errors.ClusterError(
            f"cannot read TrainingTask {namespace}/{name}: {exc.reason}"
        ) from exc
    except OSError as exc:
        raise errors.ClusterError(f"API server unreachable: {exc}") from exc
    typer.echo(render(dict(task)))  # type: ignore[call-overload]
