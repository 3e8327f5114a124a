"""Ethereum (secp256k1) keys for miners, validators and settlement.

Keys come only from a file (a mounted Kubernetes Secret is a file), or an
environment variable; never from the command line, where ``ps`` would show
them. Key material is never printed or logged: ``Key`` shows only its address,
and every error names the source (file path or variable), never the content.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from pot import errors

_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


@dataclass(frozen=True, slots=True)
class Key:
    """A loaded private key. ``repr`` and ``str`` show the address only."""

    account: LocalAccount = field(repr=False)
    source: str

    @property
    def address(self) -> str:
        """The checksummed address."""
        return str(self.account.address)

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
        account = Account.from_key(text if text.startswith("0x") else "0x" + text)
    except (ValueError, TypeError):
        # `from None`: the library's message could echo the key material.
        raise errors.KeyLoadError(f"{source}: key out of range for secp256k1") from None
    return Key(account=account, source=source)


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
    return Key(account=Account.create(), source="generated")
