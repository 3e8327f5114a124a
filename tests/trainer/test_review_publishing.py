"""A validator that dies mid-answer (a pod killed between its headers and its body, a
proxy speaking garbage) is one more reason to retry: the publisher's thread must outlive
it, or the node never publishes again and its outbox waits for a restart that may not come.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pot.trainer import publishing

from .test_units import _signed

_ANSWERS = [
    b'HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\n{"acc',  # cut short: IncompleteRead
    b"SPDY/9 garbage\r\n\r\n",  # BadStatusLine
    b'HTTP/1.1 202 Accepted\r\nContent-Length: 17\r\n\r\n{"accepted":true}',
]


@pytest.fixture
def flaky() -> Iterator[tuple[str, list[bytes]]]:
    """A validator answering each POST with the next of ``_ANSWERS``, then closing."""
    srv = socket.create_server(("127.0.0.1", 0))
    answers, bodies = list(_ANSWERS), []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(65536)
                bodies.append(request)
                conn.sendall(answers.pop(0) if len(answers) > 1 else answers[0])

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}", bodies
    srv.close()


def test_a_validator_dying_mid_answer_is_retried(
    tmp_path: Path, flaky: tuple[str, list[bytes]]
) -> None:
    url, requests = flaky
    pub = publishing.Publisher(tmp_path, validator_url=url, initial_backoff=0.01)
    pub.start()
    pub.enqueue(_signed(0))
    assert pub.close(timeout=10) == 0
    assert (tmp_path / "sent" / "00000000.json").exists()
    assert len(requests) == 3


def test_waiting_for_verdicts_outlives_a_validator_dying_mid_answer(
    flaky: tuple[str, list[bytes]],
) -> None:
    """The node keeps its store up while it waits; a bad answer is one more poll."""
    url, requests = flaky
    decided = publishing.wait_decided(
        url, "ns/t", "0x" + "0" * 40, expected=1, timeout=1, poll=0.05
    )
    assert decided is False  # the last answer has no task view in it
    assert len(requests) >= 3
