"""The content store: blobs addressed by their CID.

Trainers put checkpoints here; validators fetch them to replay segments. The
store never hands out bytes that do not hash to the CID asked for: a corrupt
or truncated blob is refused with ``BlobCorrupt`` naming the blob, so a replay
never runs on tampered state (Proof-of-Learning's commitments are only as good
as this check).

Two backends share one interface:

- ``FilesystemStore``: ``ROOT/<cid[-2:]>/<cid>``; writes are atomic (temporary
  file, fsync, rename), so a crash never leaves a half-written blob under a
  valid name.
- ``HttpStore``: a read-only client of a peer's store served at
  ``GET {base}/v1/blobs/{cid}`` (see ``pot.storeserving``); verified like a
  local read, and bounded: http(s) only, no redirects, a size cap and a deadline
  for the whole exchange.

``LayeredStore`` puts a local cache in front of a remote store; faults of the
cache never surface as the remote's.

``Budget`` bounds the memory a process's ``HttpStore`` reads hold together (a validator's
concurrent audits): a read reserves twice its cap (the buffer and the copy returned)
before it connects, waiting while others hold the rest, and gives back what its
``Content-Length`` does not need. Waiting comes before the read's deadline starts. It only ever delays a read, never
refuses one: a reservation over the whole budget waits until the read runs alone, and
reservations get room in the order they asked (a large one is not starved by small ones). So the
budget, local to each replica, never changes a verdict (the size caps that do are the
same on every replica: ``pot.trainer.checkpoints.size_cap``).
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from pot import cids, errors, files, urls

log = logging.getLogger(__name__)


class ContentStore(Protocol):
    """What trainers and validators need from a store."""

    def put(self, data: bytes) -> str:
        """Store ``data``; return its CID. Idempotent."""
        ...

    def get(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        """The verified bytes of ``cid``; BlobNotFound or BlobCorrupt otherwise, and
        BlobTooLarge, before reading it, if the blob is over ``max_bytes``."""
        ...

    def has(self, cid: str) -> bool:
        """True if the store holds ``cid`` (without verifying it)."""
        ...


class FilesystemStore:
    """A content store in a directory; safe for concurrent writers."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"FilesystemStore({str(self.root)!r})"

    def path(self, cid: str) -> Path:
        """Where ``cid`` lives (or would live) on disk."""
        cids.digest(cid)  # reject anything that is not a CID before touching paths
        return self.root / cid[-2:] / cid

    def put(self, data: bytes) -> str:
        cid = cids.cid_of(data)
        dest = self.path(cid)
        if dest.exists() and cids.matches(cid, dest.read_bytes()):
            return cid
        files.write_atomic(dest, data)
        return cid

    def put_file(self, source: str | os.PathLike[str]) -> str:
        """Store the bytes of a file; return its CID."""
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise errors.StoreError(f"{source}: cannot read ({exc.strerror})") from exc
        return self.put(data)

    def get(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        dest = self.path(cid)
        try:
            if max_bytes is not None and (size := dest.stat().st_size) > max_bytes:
                raise errors.BlobTooLarge(
                    f"blob {cid} in {self.root}: {size} bytes, more than {max_bytes}"
                )
            data = dest.read_bytes()
        except FileNotFoundError as exc:
            raise errors.BlobNotFound(f"blob {cid} not in store {self.root}") from exc
        if not cids.matches(cid, data):
            raise errors.BlobCorrupt(
                f"blob {cid} in {self.root} is corrupt: its {len(data)} bytes hash to "
                f"{cids.cid_of(data)}"
            )
        return data

    def has(self, cid: str) -> bool:
        return cids.is_valid(cid) and self.path(cid).is_file()


MAX_BLOB = 4 << 30
"""Largest blob an ``HttpStore`` reads (4 GiB): a checkpoint of a model of about
500M float32 parameters with Adam state; a peer cannot make a validator allocate more."""
DEADLINE = 600.0
"""Seconds an ``HttpStore`` read may take in all (a peer dripping one byte a second
would otherwise hold the reader for ever; the socket timeout is per read)."""
_CHUNK = 1 << 20


class Budget:
    """Bytes that reads may hold at once; ``reserve`` waits for room (thread-safe)."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"budget: must be at least 1 byte, got {total}")
        self.total = total
        self.held = 0
        self._room = threading.Condition()
        self._line: collections.deque[object] = collections.deque()
        """Reservations waiting, oldest first: room goes to them in turn, or a large one
        (a dataset's, reserving the whole budget) waited for ever behind a stream of small."""

    def __repr__(self) -> str:
        return f"Budget({self.held}/{self.total})"

    @contextlib.contextmanager
    def reserve(self, nbytes: int) -> Iterator[Hold]:
        """Hold ``nbytes`` (at most the whole budget, so it never waits for ever) for the
        ``with`` block."""
        hold = Hold(self, max(0, min(nbytes, self.total)))
        turn = object()
        with self._room:
            self._line.append(turn)
            try:
                self._room.wait_for(
                    lambda: self._line[0] is turn and self.held + hold.nbytes <= self.total
                )
            finally:
                self._line.remove(turn)
                self._room.notify_all()  # the next in line may fit too
            self.held += hold.nbytes
        try:
            yield hold
        finally:
            hold.shrink(0)

    def _give_back(self, nbytes: int) -> None:
        with self._room:
            self.held -= nbytes
            self._room.notify_all()


class Hold:
    """What one ``Budget.reserve`` holds."""

    def __init__(self, budget: Budget, nbytes: int) -> None:
        self.budget = budget
        self.nbytes = nbytes

    def shrink(self, nbytes: int) -> None:
        """Give back all but ``nbytes`` (a hold never grows: that could wait for ever)."""
        extra = self.nbytes - max(nbytes, 0)
        if extra > 0:
            self.nbytes -= extra
            self.budget._give_back(extra)


class HttpStore:
    """Read-only client of a remote store; verifies every blob it returns.

    A peer is untrusted, and so is its URL (a segment's ``storeUrl``): anything but an
    ``http(s)`` URL (``urls.http_target``) is refused, redirects are not followed (a store
    may not send the reader to another host, or to the reader's own), and a read is bounded
    in size (``max_bytes``, or the smaller cap a caller passes to ``get``: ``BlobTooLarge``
    from the declared ``Content-Length``, or at most a chunk past the cap, so a peer cannot
    make the reader hold more) and in total time (``deadline``, from connecting to the last
    byte). Every failure the peer can cause is a ``StoreError``, never another exception:
    a validator's audit attributes a ``StoreError`` to the miner (``MISSING_BLOB``) and
    anything else to itself (``AUDIT_ERROR``, which is never slashed)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        max_bytes: int = MAX_BLOB,
        deadline: float = DEADLINE,
        budget: Budget | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.deadline = deadline
        self.budget = budget

    def __repr__(self) -> str:
        return f"HttpStore({self.base_url!r})"

    def _url(self, cid: str) -> str:
        cids.digest(cid)
        return f"{self.base_url}/v1/blobs/{cid}"

    def put(self, data: bytes) -> str:
        raise errors.StoreError(f"{self.base_url}: remote stores are read-only")

    def _connection(self, url: str) -> tuple[http.client.HTTPConnection, str]:
        try:
            scheme, host, port, path = urls.http_target(url)
        except ValueError as exc:
            raise errors.StoreError(f"{self.base_url!r}: not a store URL ({exc})") from None
        kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        return kind(host, port, timeout=self.timeout), path

    def _read(
        self,
        resp: http.client.HTTPResponse,
        url: str,
        until: float,
        limit: int,
        hold: Hold | None,
    ) -> bytes:
        length = resp.getheader("Content-Length")
        # ASCII only: headers are Latin-1, and int() raises on "²", which isdigit() takes.
        declared = int(length) if length and length.isascii() and length.isdigit() else None
        if declared is not None and declared > limit:
            raise errors.BlobTooLarge(f"{url}: {length} bytes, more than {limit}")
        if hold is not None and resp.length is not None:
            # What http.client stops at: not the header, which a chunked body reads past.
            hold.shrink(2 * resp.length)
        buf = bytearray()
        while chunk := resp.read1(_CHUNK):  # returns what one socket read brings
            buf += chunk
            if len(buf) > limit:  # (an undeclared or understated size): at most a chunk over
                raise errors.BlobTooLarge(f"{url}: more than {limit} bytes")
            if time.monotonic() > until:
                raise errors.StoreError(
                    f"{url}: not read in {self.deadline:g} s ({len(buf)} bytes so far)"
                )
        if resp.length:  # read1 ends quietly where the peer closed before Content-Length
            raise errors.StoreError(f"{url}: body cut short ({len(buf)} bytes, {length} declared)")
        return bytes(buf)

    def _request(self, method: str, cid: str, limit: int) -> bytes:
        """The body of a 200 answer to ``method`` on ``cid``'s URL; BlobNotFound on a 404,
        BlobTooLarge past ``limit`` bytes, StoreError on anything else the peer does."""
        if self.budget is None or method != "GET":
            return self._exchange(method, cid, limit, None)
        # Twice: the buffer, and the bytes made of it. Held before connecting, so waiting
        # for room never eats into the deadline (a local budget must not fail a read).
        with self.budget.reserve(2 * limit) as hold:
            return self._exchange(method, cid, limit, hold)

    def _exchange(self, method: str, cid: str, limit: int, hold: Hold | None) -> bytes:
        url = self._url(cid)
        conn, path = self._connection(url)
        watchdog = _Watchdog(conn, self.deadline)
        try:
            conn.connect()  # bounded by the socket timeout (name resolution is not)
            watchdog.check()
            conn.request(method, path)
            resp = conn.getresponse()  # status line and headers: bounded by the watchdog
            watchdog.check()  # a shut-down socket reads as the end of the headers
            if resp.status == 404:
                raise errors.BlobNotFound(f"blob {cid} not found at {self.base_url}")
            if resp.status != 200:
                raise errors.StoreError(f"{url}: HTTP {resp.status} (redirects are not followed)")
            data = self._read(resp, url, watchdog.until, limit, hold) if method == "GET" else b""
            watchdog.check()  # ... or as the end of the body
            return data
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # ValueError: a host IDNA cannot encode ("label empty or too long"), a bad port
            if watchdog.fired:
                raise errors.StoreError(f"{url}: not read in {self.deadline:g} s") from exc
            raise errors.StoreError(f"{self.base_url}: unreachable ({exc})") from exc
        finally:
            watchdog.cancel()
            conn.close()

    def get(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        limit = self.max_bytes if max_bytes is None else min(max_bytes, self.max_bytes)
        data = self._request("GET", cid, limit)
        if not cids.matches(cid, data):
            raise errors.BlobCorrupt(
                f"blob {cid} from {self.base_url} is corrupt: its {len(data)} bytes hash to "
                f"{cids.cid_of(data)}"
            )
        return data

    def has(self, cid: str) -> bool:
        try:
            self._request("HEAD", cid, 0)
        except errors.StoreError:
            return False
        return True


class _Watchdog:
    """Shuts a connection's socket down once ``seconds`` have passed since it was made.

    The socket timeout bounds each read, not a response: a peer sending its headers a
    byte at a time just under it would hold the reader for hours. ``shutdown`` wakes a
    thread blocked in ``recv`` (``close`` would not), which then sees the end of the
    stream."""

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self.conn = conn
        self.until = time.monotonic() + seconds
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the raw socket, even under TLS

    def check(self) -> None:
        """TimeoutError if the deadline passed (call once connected too: a socket made after
        the timer fired was never shut down)."""
        if self.fired or time.monotonic() > self.until:
            self.fired = True
            raise TimeoutError("deadline passed")

    def cancel(self) -> None:
        self._timer.cancel()


class LayeredStore:
    """Reads from the first store that has a blob; writes to the first store.

    Validators use a local cache in front of the miners' HTTP stores. Only the last
    store's failures are reported: a corrupt, oversized or unreadable copy in an earlier
    one (the validator's own cache: a torn disk, bit rot) is passed over for the next store, and a
    copy that cannot be kept (a full or read-only cache) is still returned, verified. An
    audit must not blame the miner for the validator's disk, nor fail because of it.
    """

    def __init__(self, *stores: ContentStore) -> None:
        if not stores:
            raise ValueError("LayeredStore needs at least one store")
        self.stores = stores

    def put(self, data: bytes) -> str:
        return self.stores[0].put(data)

    def get(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        missing: list[str] = []
        last = self.stores[-1]
        for layer in self.stores:
            try:
                data = layer.get(cid, max_bytes=max_bytes)
            except errors.BlobNotFound:
                missing.append(repr(layer))
                continue
            except (errors.BlobCorrupt, errors.BlobTooLarge, OSError) as exc:
                if layer is last:
                    raise
                log.warning("blob %s: passing over %r (%s)", cid, layer, exc)
                missing.append(repr(layer))
                continue
            if layer is not self.stores[0]:
                try:
                    self.stores[0].put(data)  # repairs a corrupt copy too
                except (OSError, errors.StoreError) as exc:
                    log.warning("blob %s: not kept in %r (%s)", cid, self.stores[0], exc)
            return data
        raise errors.BlobNotFound(f"blob {cid} not found in {', '.join(missing)}")

    def has(self, cid: str) -> bool:
        return any(s.has(cid) for s in self.stores)
