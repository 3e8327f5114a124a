"""``pot local node fail|recover`` against a cluster that is down: one line saying so.

It used to print the HTTP client's connection error (``ClientConnectorError(ConnectionKey(
host=..., ...))``) when the state directory outlived the cluster (``pot local down``).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pot import cli, errors

cli._register()


@pytest.mark.parametrize("command", ["fail", "recover"])
def test_a_stopped_cluster_is_named_not_a_connection_error(tmp_path: Path, command: str) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: pot-local\n"
        f"clusters: [{{name: pot-local, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: pot-local, user: {}}]\n"
        "contexts: [{name: pot-local, context: {cluster: pot-local, user: pot-local}}]\n"
    )
    (tmp_path / "apiserver.port").write_text(str(port))
    (tmp_path / "apiserver.scheme").write_text("http")
    out = CliRunner().invoke(
        cli.app, ["local", "node", command, "gpu-rig-0", "--dir", str(tmp_path)]
    )
    assert out.exit_code == 1
    assert isinstance(out.exception, errors.ClusterError), repr(out.exception)
    assert str(out.exception) == (
        f"the local cluster in {tmp_path} is not running "
        f"(`pot local up --dir {tmp_path}` starts it again)"
    )
