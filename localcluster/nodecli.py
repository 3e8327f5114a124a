"""``pot local node fail|recover|list``: simulate a GPU rig dying and coming back.

Sets or clears the ``localcluster.pot.dev/failed`` annotation on the Node; the
process kubelet reacts as the machine would (processes gone, heartbeats
stop), and the node lifecycle controller does the rest (NotReady, eviction),
so what the operator sees is what a real cluster shows when a rig loses power.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from pot import errors
from pot.localcluster import launching, nodes

app = typer.Typer(
    no_args_is_help=True, pretty_exceptions_enable=False, help="Simulate node failures."
)
_DIR = typer.Option(launching.DEFAULT_DIR, "--dir", help="State directory of the cluster.")


async def _annotate(kubeconfig: Path, name: str, value: str | None) -> None:
    from pot.localcluster import apiclient  # aiohttp: only when a command runs

    api = apiclient.Api(apiclient.load_kubeconfig(kubeconfig), user_agent="pot-local-node")
    try:
        await api.patch(
            apiclient.path_for("v1", "nodes", name=name),
            {"metadata": {"annotations": {nodes.SIMULATED_FAILURE: value}}},
        )
    except apiclient.ApiFailure as exc:
        if exc.code == 404:
            raise errors.ConfigError(f"no node named {name!r}") from exc
        raise
    finally:
        await api.close()


def _kubeconfig(directory: Path) -> Path:
    path = directory.expanduser().resolve() / "kubeconfig"
    if not path.exists():
        raise errors.ClusterError(f"no local cluster in {directory} (run `pot local up`)")
    if not launching.status(directory.expanduser()).up:
        raise errors.ClusterError(
            f"the local cluster in {directory} is not running (`pot local up --dir {directory}` "
            "starts it again)"
        )
    return path


@app.command()
def fail(name: str = typer.Argument(..., help="Node to fail."), directory: Path = _DIR) -> None:
    """Power off NAME: its pods die, it goes NotReady, its pods are evicted."""
    asyncio.run(_annotate(_kubeconfig(directory), name, "true"))
    typer.echo(f"node {name}: failed")


@app.command()
def recover(
    name: str = typer.Argument(..., help="Node to bring back."), directory: Path = _DIR
) -> None:
    """Bring NAME back: heartbeats resume and it becomes Ready again."""
    asyncio.run(_annotate(_kubeconfig(directory), name, None))
    typer.echo(f"node {name}: recovering")
