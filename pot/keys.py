"""Ethereum (secp256k1) keys for miners, validators and settlement.

Keys come only from a file (a mounted Kubernetes Secret is a file), or an
environment variable; never from the command line, where ``ps`` would show
them. Key material is never printed or logged: ``Key`` shows only its address,
and every error names the source (file path or variable), never the content.

Signing needs only eth_keys; the eth_account view of a key (``Key.account``,
for signing transactions) is built on first use, so the processes that never
send a transaction (validators, trainers, the operator) never import
eth_account and its costly dependencies (see ``pot.eip712``).
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from eth_keys.datatypes import PrivateKey
from eth_keys.exceptions import ValidationError

from pot import errors

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


@dataclass(frozen=True, slots=True)
class Key:
    """A loaded private key. ``repr`` and ``str`` show the address only."""

    private: PrivateKey = field(repr=False)
    source: str
    address: str = field(init=False)
    """The checksummed address."""
    _account: list[LocalAccount] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", str(self.private.public_key.to_checksum_address()))
        object.__setattr__(self, "_account", [])

    @property
    def account(self) -> LocalAccount:
        """The key as an eth_account account (to sign transactions), made on first use."""
        if not self._account:
            from eth_account import Account

            self._account.append(Account.from_key(self.private.to_bytes()))
        return self._account[0]

    @property
    def secret(self) -> bytes:
        """The 32 private key bytes (for key derivations; never log them)."""
        return bytes(self.private.to_bytes())

    def __repr__(self) -> str:
        return f"Key(address={self.address}, source={self.source})"

    __str__ = __repr__


def _parse(text: str, source: str) -> Key:
    text = text.strip()
    if not _HEX_KEY.match(text):
        raise errors.KeyLoadError(
            f"{source}: not a secp256k1 private key (expected 64 hex digits, optionally 0x-prefixed)"
        )
    try:
        private = PrivateKey(bytes.fromhex(text.removeprefix("0x")))
    except (ValidationError, ValueError, TypeError):
        # `from None`: the library's message could echo the key material.
        raise errors.KeyLoadError(f"{source}: key out of range for secp256k1") from None
    return Key(private=private, source=source)


def from_text(text: str, source: str) -> Key:
    """Parse a hex private key read from ``source`` (named in errors, never the text)."""
    return _parse(text, source)


def address_of(text: str, source: str) -> str:
    """The checksummed address of the hex private key ``text`` read from ``source`` (errors
    name the source, never the text); the key itself is not kept."""
    return _parse(text, source).address


def from_file(path: str | os.PathLike[str]) -> Key:
    """Load a hex private key from a file (e.g. a Secret mounted at a path)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise errors.KeyLoadError(f"key file {p}: no such file") from None
    except OSError as exc:
        raise errors.KeyLoadError(f"key file {p}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        # Raw key bytes, say: the decoder's message would quote them.
        raise errors.KeyLoadError(
            f"key file {p}: not text (expected 64 hex digits, optionally 0x-prefixed)"
        ) from None
    return _parse(text, f"key file {p}")


def from_env(name: str) -> Key:
    """Load a hex private key from the environment variable ``name``."""
    value = os.environ.get(name)
    if value is None:
        raise errors.KeyLoadError(f"environment variable {name} is not set")
    return _parse(value, f"environment variable {name}")


def load(*, file: str | os.PathLike[str] | None = None, env: str | None = None) -> Key:
    """Load from ``file`` if given, else from ``env``; exactly one source is used."""
    if file is not None:
        return from_file(file)
    if env is not None:
        return from_env(env)
    raise errors.KeyLoadError("no key source given (a key file or an environment variable)")


def generate() -> Key:
    """A fresh random key (tests, the demo's throwaway identities)."""
    while True:  # all but about 2^-128 of 32-byte strings are in [1, n - 1]
        try:
            return Key(private=PrivateKey(secrets.token_bytes(32)), source="generated")
        except ValidationError:
            continue
