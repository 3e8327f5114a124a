"""pot.settlement.allocations stays pure (STYLE: layers you can see): validators import it.

import-linter cannot see modules under the symlinked namespace portions (grimp does not
descend into directories without __init__.py inside the regular package ``pot``), so the
contract is checked here, in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = {"web3", "aiohttp", "kopf", "torch", "kubernetes", "requests"}


def test_allocations_imports_no_io_framework() -> None:
    code = (
        "import sys, pot.settlement.allocations\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(FORBIDDEN)!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
