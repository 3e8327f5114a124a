"""README.md's "Installing on a real cluster" puts validators and trainers where the chart
fences them.

The chart renders its NetworkPolicies (validators' PBFT and API ports, the trainers'
stores) into the watched namespaces, and into the release namespace when it watches
every namespace (values-gpu-farm.yaml does). A walkthrough that installs the chart
into one namespace and then creates the ValidatorSet and the task in another (kubectl's
default) leaves every validator port open to any pod in the cluster.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

CHART = "charts/pot-operator"
_VERBS = {"apply", "create", "get"}


def install_block(repo_root: Path) -> list[list[str]]:
    """The shell lines of the README's install walkthrough (continuations joined)."""
    text = (repo_root / "README.md").read_text(encoding="utf-8")
    section = text.split("## Installing on a real cluster", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def namespace_of(words: list[str]) -> str | None:
    for i, word in enumerate(words):
        if word in ("-n", "--namespace") and i + 1 < len(words):
            return words[i + 1]
        if word.startswith("--namespace="):
            return word.split("=", 1)[1]
    return None


def test_walkthrough_runs_validators_and_tasks_where_the_policies_are(
    repo_root: Path, helm: str, helm_template: Any
) -> None:
    lines = [w for w in install_block(repo_root) if w]
    (install,) = [
        w for w in lines if w[:2] == [Path(helm).name, "install"] or w[:2] == ["helm", "install"]
    ]
    release_ns = namespace_of(install)
    assert release_ns, install
    values = [
        a for i, w in enumerate(install) if w in ("-f", "--values") for a in ("-f", install[i + 1])
    ]
    docs = helm_template(install[2], release_ns, *values)
    fenced = {d["metadata"]["namespace"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert fenced, "the walkthrough's values render no NetworkPolicy"
    kubectl = [w for w in lines if w and w[0] == "kubectl" and _VERBS & set(w)]
    assert len(kubectl) >= 4
    for words in kubectl:
        ns = namespace_of(words) or "default"
        assert ns in fenced, f"{' '.join(words)}: runs in {ns}, fenced are {sorted(fenced)}"
    tasks = [
        w.split("/", 1)[0]
        for words in lines
        for w in words
        if re.match(r"^[a-z0-9-]+/mlp-demo$", w)
    ]
    assert tasks, "the walkthrough funds and inspects the example task by namespace/name"
    assert set(tasks) <= fenced, tasks


def test_notes_say_which_namespace_is_fenced(repo_root: Path, helm: str) -> None:
    """Watching every namespace, the install notes say the fences cover one namespace."""

    def notes(*extra: str) -> str:
        out = subprocess.run(
            [helm, "install", "--dry-run=client", "pot", CHART, "-n", "pot-system", *extra],
            cwd=repo_root,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return out.split("NOTES:", 1)[1]

    assert "NetworkPolicies fence validators and trainers in pot-system only" in notes()
    assert "fence validators and trainers in" not in notes("--set", "watchNamespaces={farm-a}")
    assert "fence validators and trainers in" not in notes("--set", "networkPolicies.enabled=false")


def test_readme_upgrades_the_crds_helm_never_upgrades(repo_root: Path) -> None:
    """Helm applies a chart's crds/ on install only; the README's upgrade applies them."""
    assert (repo_root / CHART / "crds" / "trainingtask.yaml").exists()
    text = (repo_root / "README.md").read_text(encoding="utf-8")
    upgrade = text.index("helm upgrade pot")
    crds = text.index(f"kubectl apply --server-side -f {CHART}/crds/")
    assert crds < upgrade
