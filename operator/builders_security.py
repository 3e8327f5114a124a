"""Security settings of every pod the operator builds (trainers, validators).

All three images (``images/*.Dockerfile``) end with ``USER 65532:65532``. The
pods say so themselves instead of trusting what an image declares: a farm's
own trainer image (``spec.model.image``) may name a user by name, or none, and
``runAsNonRoot`` can only be checked against a numeric uid. With the uid fixed
here, the files the pods share (volumes, keys) have one known owner.

- ``fsGroup`` makes the kubelet give the pod's volumes to group 65532. Without
  it a Secret mounted with ``defaultMode: 0400`` (the miner key, the
  validators' keys) is readable by root only, and a fresh PVC is writable by
  root only. ``OnRootMismatch`` skips the recursive walk when the volume's top
  directory already has the right owner, so a large checkpoint volume does not
  delay every restart.
- Containers never gain privileges (no setuid), hold no capabilities and run
  under the runtime's default seccomp profile. These pods (bar a hostPath
  store, below) meet the Pod Security ``restricted`` profile.

A hostPath is the one volume the kubelet never hands to ``fsGroup``: it creates
the directory owned by root, mode 0755, and the trainer could not write its
first checkpoint. :func:`build_state_owner_init` gives it to the trainer's uid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

IMAGE_UID = 65532
"""The uid every pot image runs as (``USER 65532:65532`` in images/)."""
IMAGE_GID = 65532

STATE_OWNER_INIT = "state-owner"
"""Name of the init container that hands a hostPath store to :data:`IMAGE_UID`."""

# The init container's program (the trainer image's own Python, so no extra
# image has to be pulled onto an air-gapped farm). It changes the owner of the
# mount's top directory only: everything below it is created by the trainer,
# already as IMAGE_UID. It is a no-op when the owner is right already (a gang
# restarted on a node that kept the directory). Run by a user that is not root,
# as every container is on the embedded local cluster (which ignores runAsUser
# and runs all of a pod's containers as the same user), a directory that user
# can already write is left as it is; anywhere else a failure stops the pod
# with a message naming the path, before any training starts.
_HAND_OVER = """\
import os, sys
path, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
st = os.stat(path)
if (st.st_uid, st.st_gid) != (uid, gid):
    try:
        os.chown(path, uid, gid)
    except OSError as err:
        if os.geteuid() == 0 or not os.access(path, os.W_OK):
            sys.exit(f"cannot give {path} to {uid}:{gid}: {err}")
        print(f"not root: {path} stays with uid {os.geteuid()}, which runs every container")
"""


def pod_security_context() -> dict[str, Any]:
    """Pod-level ``securityContext``: non-root as the images' uid, volumes to its group."""
    return {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
        "runAsGroup": IMAGE_GID,
        "fsGroup": IMAGE_GID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Container-level ``securityContext`` of every long-running or init container.

    ``readOnlyRootFilesystem`` is not set: torch writes caches and temporary
    files under ``$HOME`` and ``$TMPDIR`` in the trainers and in the
    validators' replays.
    """
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def build_state_owner_init(
    image: str, volume: str, mount_path: str, resources: Mapping[str, Any]
) -> dict[str, Any]:
    """Init container that gives a hostPath volume's directory to the images' uid.

    Changing the owner of a root-owned directory takes root with
    ``CAP_CHOWN``, and nothing more: the top directory is owned by root
    already (no ``CAP_FOWNER``), and root can read it (no
    ``CAP_DAC_OVERRIDE``). Every other capability is dropped, privilege
    escalation is off, and the container exits before the trainer starts.

    ``resources``: the trainer container's own. Init containers run one at a
    time, so equal requests leave the pod's effective requests (the gang's
    fit) unchanged, and equal limits keep a Guaranteed pod Guaranteed.
    """
    return {
        "name": STATE_OWNER_INIT,
        "image": image,
        "command": ["python", "-c", _HAND_OVER, mount_path, str(IMAGE_UID), str(IMAGE_GID)],
        "resources": {k: dict(v) for k, v in resources.items()},
        "volumeMounts": [{"name": volume, "mountPath": mount_path}],
        # Its one-line error (sys.exit) becomes the termination message the operator shows.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": False,
            "runAsUser": 0,
            "runAsGroup": 0,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
        },
    }
