"""Validator test parts: one ``Node`` (HTTP API, core, disk) of a 4-replica peers.json with no
transport, for tests that drive the API or ``Node.submit`` in-process; the replicated
application of four fresh validators; and a small spec the validators accept."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pot import keys
from pot.validator import app as vapp
from pot.validator import auditing, auth, localnet, replica

SPEC: dict[str, Any] = {
    "model": {"name": "mlp-regression"},
    "dataset": {"name": "synthetic-regression"},
    "hyperparameters": {"steps": 40},
    "resources": {"nodes": 1},
    "proof": {"segmentSteps": 20, "sampleRate": 0.5},
    "reward": {"pool": "1000", "minerStake": "10"},
}
"""A one-node task the validators accept (two segments of 20 steps)."""


def app_of_four(operator: str | None = None) -> vapp.App:
    """The replicated application of four fresh validators (f = 1), equal stakes."""
    return vapp.App(
        vapp.Validators(
            addresses=tuple(keys.generate().address for _ in range(4)),
            stakes=(1, 1, 1, 1),
            chain_id=31337,
            contract="0x" + "11" * 20,
            f=1,
            operator=operator,
        )
    )


@contextlib.contextmanager
def api_node(tmp_path: Path, me: int = 0) -> Iterator[tuple[replica.Node, list[keys.Key]]]:
    """Replica ``me`` and every replica's key; its thread pool and disk closed after."""
    config, keys_ = localnet.write_peers(tmp_path, 4)
    node = replica.Node(
        peers=auth.load_peers(config),
        me=me,
        key=keys_[me],
        data_dir=tmp_path / f"data-{me}",
        auditor=auditing.Scripted(),
    )
    try:
        yield node, list(keys_)
    finally:
        node.sync_pool.shutdown()
        node.disk.close()
