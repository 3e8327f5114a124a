"""pot: Proof-of-Training on Kubernetes.

The shared core lives here (content addressing, keys, signing, errors, CLI);
the components are mapped into this namespace from their top-level folders:
``pot.operator``, ``pot.trainer``, ``pot.validator``, ``pot.settlement``,
``pot.localcluster`` (see pyproject.toml and DESIGN §2).
"""

__version__ = "0.1.0"
