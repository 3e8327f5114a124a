"""``pot local up --nodes FILE``: a layout typed by hand is checked field by field.

A wrong type used to pass (``memory: lots`` started a cluster whose node had no usable
capacity) or crash with a traceback (``taints: [5]``); every field now gets one line naming
it, before anything starts.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pot import errors
from pot.localcluster import nodes

ROOT = Path(__file__).resolve().parents[2]


def test_the_layout_docs_show_loads(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "localcluster-pods.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```yaml\n(nodes:.*?)```", text, re.S)
    path = tmp_path / "nodes.yaml"
    path.write_text(block)
    big, kwok = nodes.load_layout(path)
    assert (big.name, big.gpus, big.memory) == ("big-rig", 8, "512Gi")
    assert kwok.virtual and kwok.pods == 5000 and kwok.taints[0]["effect"] == "NoSchedule"


def test_numbers_may_be_written_bare(tmp_path: Path) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text("nodes:\n- {name: rig, cpu: 64, memory: 1Gi, labels: {zone: a}}\n")
    (rig,) = nodes.load_layout(path)
    assert rig.cpu == "64" and nodes.capacity(rig)["cpu"] == "64"


@pytest.mark.parametrize(
    ("node", "said"),
    [
        ({"name": "A_b"}, "nodes[0].name: expected a DNS label"),
        ({"gpus": 2}, "nodes[0].name is required"),
        ({"name": "a", "gpus": "x"}, "nodes[0].gpus: expected a whole number >= 0, not 'x'"),
        ({"name": "a", "gpus": True}, "nodes[0].gpus: expected a whole number"),
        ({"name": "a", "pods": 0}, "nodes[0].pods: expected a whole number >= 1"),
        ({"name": "a", "memory": "lots"}, "nodes[0].memory: expected a positive resource quantity"),
        ({"name": "a", "cpu": [1]}, "nodes[0].cpu: expected a resource quantity"),
        ({"name": "a", "labels": [1]}, "nodes[0].labels: expected a mapping of strings"),
        ({"name": "a", "taints": [5]}, "nodes[0].taints[0]: expected a mapping"),
        ({"name": "a", "taints": [{"key": "k", "effect": "x"}]}, "taints[0].effect: expected one"),
        ({"name": "a", "virtual": "yes please"}, "nodes[0].virtual: expected true or false"),
    ],
)
def test_a_bad_field_is_one_error_naming_it(
    tmp_path: Path, node: dict[str, object], said: str
) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump({"nodes": [node]}))
    with pytest.raises(errors.ConfigError) as caught:
        nodes.load_layout(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert said in str(caught.value)


def test_bad_yaml_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text("nodes:\n- {name: a\n")
    with pytest.raises(errors.ConfigError) as caught:
        nodes.load_layout(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid YAML (") and "line 3" in message
    assert "\n" not in message


def test_a_binary_file_is_not_a_layout(tmp_path: Path) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(errors.ConfigError) as caught:
        nodes.load_layout(path)
    assert str(caught.value) == f"{path}: not a text file (a YAML or JSON layout)"
