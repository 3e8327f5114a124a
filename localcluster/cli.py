"""``pot local``: the embedded local cluster's command group (DESIGN §6, §7)."""

from __future__ import annotations

from pathlib import Path

import typer

from pot.localcluster import launching, nodecli

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)

_DIR = typer.Option(launching.DEFAULT_DIR, "--dir", help="State directory of the cluster.")


app.add_typer(nodecli.app, name="node")  # issue 4: pot local node fail|recover

_NODES = typer.Option(None, "--nodes", help="Node layout (YAML/JSON); default: two 4-GPU rigs.")


_AUTHZ = typer.Option(
    "AlwaysAllow",
    "--authorization-mode",
    help="RBAC: serve HTTPS from a cluster CA, want a token on every request (the kubeconfig "
    "gets the admin's, pods their ServiceAccount's) and enforce the stored RBAC rules, as a "
    "real cluster does.",
)


@app.command()
def up(
    directory: Path = _DIR, nodes: Path | None = _NODES, authorization_mode: str = _AUTHZ
) -> None:
    """Start the local cluster in the background and print its kubeconfig path."""
    if nodes is not None:
        from pot.localcluster import controlplane

        controlplane.install_layout(directory.expanduser().resolve(), nodes)
    kubeconfig, already = launching.up(directory, authorization=authorization_mode)
    if already:
        typer.echo(f"already up: {kubeconfig}")
    else:
        typer.echo(str(kubeconfig))


@app.command()
def down(directory: Path = _DIR) -> None:
    """Stop every process of the local cluster (state is kept)."""
    stopped = launching.down(directory)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "not running")


@app.command()
def status(directory: Path = _DIR) -> None:
    """Say whether the local cluster is up, and which processes run."""
    st = launching.status(directory.expanduser())
    typer.echo(
        f"{'up' if st.up else 'down'}: {st.url or 'no API server'} (state in {st.directory})"
    )
    for name, pid in st.running.items():
        typer.echo(f"  {name}: pid {pid}")
    for name in st.stopped:
        typer.echo(f"  {name}: not running")
    if not st.up:
        raise typer.Exit(1)
