"""Replica authentication: peers.json, per-pair MAC keys by ECDH, signed view changes.

PBFT's fast variant authenticates the normal case with MACs, not signatures
(Castro & Liskov, TOCS 2002 §3.2; OSDI 1999 §4.1 footnote on authenticators):
a MAC costs microseconds, an ECDSA verification ~300 µs here. Each pair of
replicas derives a shared secret by ECDH of their secp256k1 keys (the same
keys that sign allocations, listed in peers.json), so no extra key material
is distributed. Per TCP session both sides contribute a fresh nonce; the
session key is keyed-BLAKE2b of both nonces under the pair key, and every
frame carries a strictly increasing counter under the MAC: a frame replayed
from an old session fails the MAC, one replayed within a session fails the
counter (``Rejection.REPLAYED``).

VIEW-CHANGE and NEW-VIEW are relayed inside NEW-VIEWs, so they are signed
(ECDSA secp256k1/SHA-256 via ``cryptography``), verified against the
replicas' public keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from eth_utils import is_address, keccak, to_checksum_address

from pot import errors, keys
from pot.settlement import allocations
from pot.validator import pbft

MAC_LEN = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class Peer:
    id: int
    host: str
    pbft_port: int
    http_port: int
    address: str
    public_key: bytes
    """Uncompressed secp256k1 point (65 bytes, 0x04 ‖ x ‖ y)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Peers:
    """peers.json (docs/protocol.md)."""

    n: int
    f: int
    replicas: tuple[Peer, ...]
    chain_id: int
    contract: str
    stakes: tuple[int, ...]
    tuning: dict[str, int]
    """peers.json "pbft": checkpointInterval, batchSize, viewChangeTimeoutMs, retransmitMs, and
    openClients (0/1 or false/true; not in the ValidatorSet CRD: only the bench sets it)."""
    operator: str | None = None
    """peers.json "operator": the only address whose task registrations are accepted (none:
    anyone's, for hand-made test sets; the operator always names itself)."""

    def config(self, **overrides: Any) -> pbft.Config:
        p = self.tuning
        kw: dict[str, Any] = {
            "n": self.n,
            "f": self.f,
            "checkpoint_interval": p.get("checkpointInterval", 64),
            "batch_size": p.get("batchSize", 100),
            "view_change_timeout_ms": p.get("viewChangeTimeoutMs", 4000),
            "retransmit_ms": p.get("retransmitMs", 200),
            "open_clients": bool(p.get("openClients", 0)),
        }
        kw.update(overrides)
        return pbft.Config(**kw)


def public_key_of(key: keys.Key) -> bytes:
    """The uncompressed public key of a loaded key (what peers.json lists)."""
    priv = ec.derive_private_key(int.from_bytes(key.secret, "big"), ec.SECP256K1())
    from cryptography.hazmat.primitives import serialization

    return priv.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def address_of_public_key(pub: bytes) -> str:
    return str(to_checksum_address(keccak(pub[1:])[-20:]))


def _stake(value: Any, i: int, where: str) -> int:
    if not allocations.is_wei(value):
        raise errors.ConfigError(f"{where}: stakes[{i}]: {value!r:.80} is not a decimal wei string")
    return int(value)


def load_peers(path: str | os.PathLike[str]) -> Peers:
    """Parse peers.json; ConfigError names the field at fault."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise errors.ConfigError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise errors.ConfigError(f"{path}: not readable JSON ({exc})") from None
    return parse_peers(doc, str(path))


def _operator(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not is_address(value):
        raise errors.ConfigError(f"{where}: operator must be a 0x-prefixed 20-byte address")
    return value


def parse_peers(doc: Any, where: str = "peers.json") -> Peers:
    try:
        n, f = int(doc["n"]), int(doc["f"])
        reps = []
        for i, r in enumerate(doc["replicas"]):
            pub = bytes.fromhex(str(r["publicKey"]).removeprefix("0x"))
            if len(pub) != 65 or pub[0] != 4:
                raise errors.ConfigError(f"{where}: replicas[{i}].publicKey must be 65 bytes 0x04…")
            addr = address_of_public_key(pub)
            if str(r["address"]).lower() != addr.lower():
                raise errors.ConfigError(f"{where}: replicas[{i}].address does not match publicKey")
            reps.append(
                Peer(
                    id=int(r["id"]),
                    host=str(r["host"]),
                    pbft_port=int(r.get("pbftPort", 7000)),
                    http_port=int(r.get("httpPort", 8080)),
                    address=addr,
                    public_key=pub,
                )
            )
        chain = doc.get("chain", {})
        given = doc.get("stakes") or []
        stakes = tuple(_stake(s, i, where) for i, s in enumerate(given)) if given else (1,) * n
        pb = {k: int(v) for k, v in (doc.get("pbft") or {}).items()}
        if pb.get("openClients", 0) not in (0, 1):
            raise errors.ConfigError(f"{where}: pbft.openClients must be true or false")
        peers = Peers(
            n=n,
            f=f,
            replicas=tuple(reps),
            chain_id=int(chain.get("chainId", 31337)),
            contract=str(chain.get("contract", "0x" + "00" * 20)),
            stakes=stakes,
            tuning=pb,
            operator=_operator(doc.get("operator"), where),
        )
    except errors.ConfigError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise errors.ConfigError(f"{where}: malformed ({exc!r})") from None
    if n != len(peers.replicas) or [r.id for r in peers.replicas] != list(range(n)):
        raise errors.ConfigError(f"{where}: replicas must list ids 0..n-1 in order")
    if n < 3 * f + 1 or len(stakes) != n:
        raise errors.ConfigError(f"{where}: need n >= 3f+1 and one stake per replica")
    return peers


class Auth:
    """This replica's keys: pair keys for MACs, and view-change signatures (``pbft.Crypto``)."""

    def __init__(self, me: int, key: keys.Key, peers: Peers) -> None:
        self.me = me
        self.peers = peers
        secret = int.from_bytes(key.secret, "big")
        self._priv = ec.derive_private_key(secret, ec.SECP256K1())
        if public_key_of(key) != peers.replicas[me].public_key:
            raise errors.ConfigError(f"key does not belong to replica {me} in peers.json")
        self._pubs = [
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), p.public_key)
            for p in peers.replicas
        ]
        self.pair: dict[int, bytes] = {}
        for p in peers.replicas:
            if p.id == me:
                continue
            shared = self._priv.exchange(ec.ECDH(), self._pubs[p.id])
            lo, hi = sorted((me, p.id))
            self.pair[p.id] = hashlib.blake2b(
                shared + lo.to_bytes(2, "big") + hi.to_bytes(2, "big"),
                person=b"pot-pbft-pair",
                digest_size=32,
            ).digest()

    def session_key(self, peer: int, client: int, nonce_c: bytes, nonce_s: bytes) -> bytes:
        """Direction-specific key of one TCP session (client → server)."""
        return hashlib.blake2b(
            nonce_c + nonce_s + client.to_bytes(2, "big"), key=self.pair[peer], digest_size=32
        ).digest()

    # pbft.Crypto
    def sign(self, data: bytes) -> bytes:
        return self._priv.sign(data, ec.ECDSA(hashes.SHA256()))

    def verify(self, replica: int, data: bytes, signature: bytes) -> bool:
        if not 0 <= replica < len(self._pubs):
            return False
        try:
            self._pubs[replica].verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True

    def nonce(self) -> bytes:
        return os.urandom(16)


def mac(key: bytes, counter: int, payload: bytes) -> bytes:
    """Keyed BLAKE2b over ``counter:u64 ‖ payload`` (a frame: docs/protocol.md)."""
    h = hashlib.blake2b(counter.to_bytes(8, "big"), key=key, digest_size=MAC_LEN)
    h.update(payload)
    return h.digest()


def mac_ok(key: bytes, counter: int, payload: bytes, tag: bytes) -> bool:
    return hmac.compare_digest(mac(key, counter, payload), tag)
