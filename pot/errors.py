"""Errors users can cause, in one hierarchy.

Every component raises these instead of letting a library's exceptions leak
(STYLE: wrap what you don't own). Each message names the field, file, peer or
endpoint at fault and is fit to print on one line; the CLI prints
``error: <message>`` and exits non-zero without a traceback. Library errors are
chained with ``raise ... from`` so the cause stays in logs.
"""

from __future__ import annotations


class PotError(Exception):
    """Base of every error pot raises on purpose."""


class ConfigError(PotError):
    """A spec, config file or argument is invalid; the message names the field."""


class StoreError(PotError):
    """The content store could not serve or accept a blob."""


class BlobNotFound(StoreError):
    """No blob with that CID exists in the store."""


class BlobCorrupt(StoreError):
    """A blob's bytes do not hash to its CID: refused, never returned."""


class BlobTooLarge(StoreError):
    """A blob is larger than its reader's cap; the read stopped there (nothing that size
    was allocated)."""


class KeyLoadError(PotError):
    """A private key could not be loaded. Never carries key material."""


class ChainError(PotError):
    """The EVM chain rejected or could not process a request."""


class ChainUnreachable(ChainError):
    """The chain RPC endpoint did not answer (retried with backoff by callers)."""


class ClusterError(PotError):
    """The Kubernetes API (or the local cluster) failed a request."""


class ProofError(PotError):
    """A proof segment is malformed (verification failures are Verdicts, not errors)."""


class ProtocolError(PotError):
    """A peer sent a message that breaks the wire protocol."""


class TrainingError(PotError):
    """torch.distributed or the training loop failed."""
