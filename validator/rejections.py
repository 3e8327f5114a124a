"""Every reason a replica refuses something, in one enum (STYLE: every wire rejection has a name).

A replica never raises on untrusted input: a validator of a peer's message
returns one of these, the replica counts it (``pot_validator_rejected_total``
by ``reason``) and logs it, and goes on. hivemind's ``P2PHandlerError`` list is
the model: one member per reason, one comment each.
"""

from __future__ import annotations

import enum


class Rejection(enum.Enum):
    """Why a PBFT message, transport frame or application request was refused."""

    # --- wire / transport -------------------------------------------------
    MALFORMED = "malformed"  # not decodable, a field missing or mistyped
    OVERSIZED = "oversized"  # a frame, request or batch over its size limit
    UNKNOWN_TYPE = "unknown_type"  # a message type this protocol does not define
    UNKNOWN_PEER = "unknown_peer"  # a replica id outside 0..n-1
    BAD_AUTHENTICATOR = "bad_authenticator"  # the per-pair MAC does not verify
    REPLAYED = "replayed"  # a frame counter not strictly increasing in its session
    SPOOFED_SENDER = (
        "spoofed_sender"  # the message names a sender other than the authenticated peer
    )
    BAD_SIGNATURE = "bad_signature"  # a signed (view-change, new-view) message does not verify
    FORGED_REQUEST = (
        "forged_request"  # a request under a replica's client name, not signed by that replica
    )
    DISTRUSTED = "distrusted"  # from a peer whose signature failed lately (``signatures``)
    UNKNOWN_CLIENT = (
        "unknown_client"  # a request under a client name no replica is bound to (openClients off)
    )

    # --- normal case (PBFT §4.2) -----------------------------------------
    WRONG_VIEW = "wrong_view"  # not for the view this replica is in (or it is changing views)
    OUTSIDE_WINDOW = "outside_window"  # sequence number not in (h, h + L] (§4.3 watermarks)
    BAD_DIGEST = "bad_digest"  # a batch that does not hash to the digest it claims
    NOT_PRIMARY = "not_primary"  # a PRE-PREPARE from a backup, or a PREPARE from the primary
    EQUIVOCATION = "equivocation"  # a second PRE-PREPARE for (view, seq) with another digest
    DUPLICATE = "duplicate"  # seen before; harmless, counted so floods show in metrics
    STALE = "stale"  # below the stable checkpoint (already garbage-collected)
    WINDOW_FULL = "window_full"  # a PRE-PREPARE past the request bytes a VIEW-CHANGE may carry
    RATE_LIMITED = "rate_limited"  # a peer sent the last NEW-VIEW under a timeout ago asks again

    # --- view change and state transfer (§4.4, §4.5; TOCS §4.5, §5.3) ----
    INVALID_VIEW_CHANGE = "invalid_view_change"  # a VIEW-CHANGE whose sets are inconsistent
    INVALID_NEW_VIEW = "invalid_new_view"  # a NEW-VIEW that does not follow from its view changes
    UNCERTIFIED_STATE = "uncertified_state"  # a state snapshot no quorum of checkpoints vouches for

    # --- replicated application --------------------------------------------
    UNKNOWN_TASK = "unknown_task"  # a segment or verdict for a task never registered
    TASK_EXISTS = "task_exists"  # a second registration of a task with a different spec
    BAD_SPEC = "bad_spec"  # a task spec the validators cannot run (the field is named)
    NOT_OPERATOR = "not_operator"  # a registration not signed by the ValidatorSet's operator
    CONFLICTING_SEGMENT = "conflicting_segment"  # another segment already holds this (miner, index)
    BROKEN_CHAIN = "broken_chain"  # startCid != the miner's previous endCid (index 0: initial ckpt)
    UNKNOWN_MINER = "unknown_miner"  # a node rank already bound to another miner address
    TASK_CLOSED = "task_closed"  # allocation computed, or 2f+1 replicas done auditing the task
    NOT_READY = "not_ready"  # an ``audited`` claim before every node's final segment is in
    NOT_ASSIGNED = "not_assigned"  # a verdict for a segment that was not sampled for audit
    BAD_VERDICT = "bad_verdict"  # a verdict or allocation signature from a non-replica
