"""What validators sign about audits, and the private coins that pick them.

``Verdict`` (one replica's replay outcome for one segment) and ``Audited``
(a replica is done with its private audits of a task) are EIP-712 typed data
in the off-chain domain ``pot-verdict``; ``pot.validator.app`` checks them and
``pot.validator.replica`` signs them. ``audit_coin`` is a replica's private
draw (docs/protocol.md, "Audit sampling is private"). Pure.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from pot import signing

VERDICT_DOMAIN = signing.offchain_domain("verdict")
VERDICT_TYPES: signing.Types = {
    "Verdict": [
        {"name": "task", "type": "string"},
        {"name": "miner", "type": "address"},
        {"name": "index", "type": "uint256"},
        {"name": "segment", "type": "bytes32"},
        {"name": "valid", "type": "bool"},
        {"name": "reason", "type": "string"},
    ]
}
AUDITED_TYPES: signing.Types = {"Audited": [{"name": "task", "type": "string"}]}
SCALE = 1 << 64


def audit_coin(secret: bytes, task: str, digest: str) -> int:
    """A replica's private draw for one segment, in [0, SCALE): replayed iff below the
    task's rate. ``secret`` never leaves the replica (``coin_secret``)."""
    mac = hmac.new(secret, f"{task}\n{digest}".encode(), hashlib.sha256).digest()
    return int.from_bytes(mac[:8], "big")


def coin_secret(private_key: bytes) -> bytes:
    """The audit-coin key, derived from (never equal to) the replica's signing key."""
    return hashlib.sha256(b"pot-audit-coin\0" + private_key).digest()


def verdict_message(
    *, task: str, miner: str, index: int, digest: str, valid: bool, reason: str
) -> dict[str, Any]:
    return {
        "task": task,
        "miner": miner,
        "index": index,
        "segment": bytes.fromhex(digest.removeprefix("0x")),
        "valid": valid,
        "reason": reason,
    }
