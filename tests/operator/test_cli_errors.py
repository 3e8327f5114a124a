"""``pot task status`` when the cluster cannot answer: one line naming the cause."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from pot import cli, errors

cli._register()


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def status(config: Path, name: str = "mlp") -> Result:
    return CliRunner().invoke(cli.app, ["task", "status", name], env={"KUBECONFIG": str(config)})


@pytest.fixture
def api_404() -> Iterator[tuple[str, list[bytes]]]:
    """A server that answers every GET 404 with the body the test puts in the list."""
    bodies: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = bodies[0]
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_api_server_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = status(kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}"))
    assert out.exit_code == 1
    assert isinstance(out.exception, errors.ClusterError), repr(out.exception)
    assert f"API server http://127.0.0.1:{port} unreachable" in str(out.exception)
    assert "t0ken" not in str(out.exception)


def test_missing_task_and_missing_crd_are_told_apart(
    tmp_path: Path, api_404: tuple[str, list[bytes]]
) -> None:
    url, bodies = api_404
    config = kubeconfig(tmp_path / "kc", url)
    missing = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": "NotFound",
        "code": 404,
        "message": 'trainingtasks.pot.dev "mlp" not found',
        "details": {"name": "mlp", "group": "pot.dev", "kind": "trainingtasks"},
    }
    bodies[:] = [json.dumps(missing).encode()]
    out = status(config)
    assert out.exit_code == 1
    assert str(out.exception) == 'TrainingTask "mlp" not found in namespace "default"'
    bodies[:] = [b"404 page not found\n"]  # what a server without the CRD answers
    out = status(config)
    assert out.exit_code == 1
    assert "does not serve TrainingTasks" in str(out.exception)
    assert "CRDs installed" in str(out.exception)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("clusters: [\n", "not YAML"),
        ("- 1\n- 2\n", "not a kubeconfig (TypeError"),
        ("apiVersion: v1\nclusters: 5\n", "not a kubeconfig (TypeError"),
        ("users: [{name: u, user: {token: s3cret}}]\nkind: [", "not YAML"),
    ],
)
def test_a_malformed_kubeconfig_is_one_line_without_its_content(
    tmp_path: Path, text: str, why: str
) -> None:
    config = tmp_path / "kc"
    config.write_text(text)
    out = status(config)
    assert out.exit_code == 1
    assert isinstance(out.exception, errors.ClusterError), repr(out.exception)
    assert str(out.exception).startswith(f"no usable kubeconfig in KUBECONFIG={config}: {why}")
    assert "s3cret" not in str(out.exception)
