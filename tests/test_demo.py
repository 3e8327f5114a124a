"""``pot demo`` starts from an empty cluster every run: its chain is new each time, so a
TrainingTask an earlier run left Succeeded must not be there to count as done at once."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from pot import demo
from pot.localcluster import launching


def _configmap(url: str, name: str, method: str = "GET") -> int:
    path = "/api/v1/namespaces/default/configmaps"
    body = None
    if method == "POST":
        doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
        body = json.dumps(doc).encode()
    else:
        path += f"/{name}"
    req = urllib.request.Request(
        url + path, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_second_run_does_not_see_the_first_runs_objects(tmp_path: Path) -> None:
    launching.up(tmp_path, components=[])  # the API server alone is enough here
    try:
        url = launching.status(tmp_path).url
        assert url is not None
        assert _configmap(url, "left-by-run-1", "POST") == 201
        launching.down(tmp_path)
        launching.up(tmp_path, components=[])  # a plain restart keeps objects (pot local up)
        url = launching.status(tmp_path).url
        assert url is not None and _configmap(url, "left-by-run-1") == 200

        (tmp_path / "node-disks" / "pot-tasks").mkdir(parents=True)
        (tmp_path / "kubelet" / "volumes").mkdir(parents=True)
        demo.fresh(tmp_path)  # stops the running cluster, forgets its objects and disks
        assert not launching.status(tmp_path).running
        assert not (tmp_path / "node-disks").exists() and not (tmp_path / "kubelet").exists()
        launching.up(tmp_path, components=[])
        url = launching.status(tmp_path).url
        assert url is not None and _configmap(url, "left-by-run-1") == 404
    finally:
        launching.down(tmp_path)
