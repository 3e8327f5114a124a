"""Wei amounts are strings of ASCII digits, and nothing else passes for one.

They were checked with ``str.isdigit``, which is True for other scripts' digits and for
superscripts: ``int`` reads "١٠٠" (Arabic-Indic) as 100 and raises ValueError on "²". So a
registration with ``pool: "²"`` made the validator API answer 500 (``check_spec`` raised past
its ConfigError handler), the replicated application refused it as MALFORMED without naming
the field (its catch-all; the same on every replica, so no split), and "١٠٠" went through as
100 wherever a pool, stake or allocation amount was read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pot import errors, keys
from pot.settlement import allocations
from pot.validator import api, auth, localnet, pbft, specs
from pot.validator import app as vapp
from pot.validator import messages as m
from tests.validator import node_kit

SPEC = node_kit.SPEC
NOT_ASCII = ["²", "١٠٠", "１０", "1²"]  # superscript, Arabic-Indic, fullwidth, mixed


def _with(field: str, value: str) -> dict[str, Any]:
    return {**SPEC, "reward": {**SPEC["reward"], field: value}}


@pytest.mark.parametrize("field", ["pool", "minerStake"])
@pytest.mark.parametrize("value", NOT_ASCII)
def test_a_spec_with_non_ascii_digits_is_refused_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(errors.ConfigError, match=rf"^spec\.reward\.{field}: "):
        specs.check_spec(_with(field, value))
    assert specs.check_spec(_with(field, "77"))[field] == 77


def test_the_replicated_application_refuses_it_as_a_bad_spec() -> None:
    app = node_kit.app_of_four()
    ctx = pbft.ExecContext(seq=1, view=0, batch_digest=bytes(32))
    op = vapp.op("register", task="farm/mlp", uid="u-1", spec=_with("pool", "²"))
    result = json.loads(app.execute(m.Request("c", 1, op), ctx))
    assert result["reason"] == "BAD_SPEC" and result["detail"].startswith("spec.reward.pool")
    assert "farm/mlp" not in app.tasks


def test_the_api_answers_400_naming_the_field(tmp_path: Path) -> None:
    stack = contextlib.ExitStack()
    node, _ = stack.enter_context(node_kit.api_node(tmp_path))

    async def go() -> None:
        async with TestClient(TestServer(api.build(node))) as client:
            r = await client.post(
                "/v1/tasks", json={"id": "farm/mlp", "uid": "u-1", "spec": _with("pool", "²")}
            )
            assert r.status == 400, await r.text()
            assert (await r.json())["field"] == "spec.reward.pool"

    try:
        asyncio.run(go())
    finally:
        stack.close()


def test_allocation_amounts_and_peer_stakes_must_be_ascii(tmp_path: Path) -> None:
    alloc = allocations.Allocation(
        task="farm/mlp", round=0, payees=(keys.generate().address,), amounts=(100,)
    )
    doc = allocations.to_json(alloc, chain_id=1, contract="0x" + "11" * 20, quorum=3)
    assert allocations.parse(doc)[0] == alloc
    with pytest.raises(errors.ProtocolError, match="amounts"):
        allocations.parse({**doc, "amounts": ["١٠٠"]})
    config, _ = localnet.write_peers(tmp_path, 4)
    peers = json.loads(config.read_text())
    assert auth.parse_peers({**peers, "stakes": ["1", "2", "3", "4"]}).stakes == (1, 2, 3, 4)
    with pytest.raises(errors.ConfigError, match=r"stakes\[1\]"):
        auth.parse_peers({**peers, "stakes": ["1", "١", "1", "1"]})
