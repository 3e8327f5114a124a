"""One validator ``Node`` (HTTP API, core, disk) of a 4-replica peers.json, no transport:
for tests that drive the API or ``Node.submit`` in-process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from pot import keys
from pot.validator import auditing, auth, localnet, replica


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
