"""Compile ``contracts/*.sol`` with solc-js into checked-in artifacts.

Why checked in: the sidecar, the CLI and the demo deploy from ``contracts/artifacts``
without node at run time; a test recompiles and fails on drift (STYLE: one source of
truth). Output is deterministic: fixed compiler (npm ``solc`` 0.8.37, pinned in
``.tools/package.json``), fixed settings, no metadata hash (it would embed file paths
and differ between checkouts), sources read in sorted order.

Run ``python -m pot.settlement.compiling`` to rewrite the artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pot import errors

CONTRACTS = Path(__file__).resolve().parent.parent / "contracts"
ARTIFACTS = CONTRACTS / "artifacts"
REPO = CONTRACTS.parent
NODE_MODULES = REPO / ".tools" / "node_modules"

# Settings that decide the bytecode. Cancun: both anvil 1.7 and py-evm 0.12 run it, and it
# has transient storage and MCOPY should OZ use them.
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 10_000},
    "viaIR": True,
    "evmVersion": "cancun",
    "metadata": {"bytecodeHash": "none", "appendCBOR": False},
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}

# solc-js wants an import callback to find @openzeppelin/...; node_modules is the only root.
_JS = r"""
const solc = require('solc');
const fs = require('fs');
const path = require('path');
const input = fs.readFileSync(0, 'utf8');
const root = process.argv[1];
function findImports(p) {
  const full = path.join(root, p);
  if (fs.existsSync(full)) return {contents: fs.readFileSync(full, 'utf8')};
  return {error: 'not found: ' + p};
}
process.stdout.write(JSON.stringify({
  version: solc.version(),
  output: JSON.parse(solc.compile(input, {import: findImports})),
}));
"""


def sources() -> list[Path]:
    """The Solidity sources: production contracts and the test/bench ones in ``testing/``."""
    return sorted(CONTRACTS.glob("*.sol")) + sorted((CONTRACTS / "testing").glob("*.sol"))


def compile_all() -> dict[str, dict[str, Any]]:
    """Compile every source; returns ``{contract name: artifact}``. ChainError on failure."""
    node = shutil.which("node")
    if node is None:
        raise errors.ChainError("node is not installed: cannot run solc-js (run `make install`)")
    if not (NODE_MODULES / "solc").is_dir():
        raise errors.ChainError(f"solc-js not found under {NODE_MODULES} (run `make install`)")
    standard = {
        "language": "Solidity",
        "sources": {
            p.relative_to(CONTRACTS).as_posix(): {"content": p.read_text(encoding="utf-8")}
            for p in sources()
        },
        "settings": SETTINGS,
    }
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
    proc = subprocess.run(
        [node, "-e", _JS, str(NODE_MODULES)],
        input=json.dumps(standard, sort_keys=True),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise errors.ChainError(f"solc-js failed: {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout)
    output = result["output"]
    problems = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if problems:
        raise errors.ChainError(
            "solidity compile errors:\n" + "\n".join(e["formattedMessage"] for e in problems)
        )
    artifacts: dict[str, dict[str, Any]] = {}
    for source, contracts in sorted(output["contracts"].items()):
        for name, data in sorted(contracts.items()):
            if not data["evm"]["bytecode"]["object"]:
                continue  # interfaces and abstract contracts
            if source.startswith("@"):
                continue  # libraries' own contracts
            artifacts[name] = {
                "contractName": name,
                "source": f"contracts/{source}",
                "compiler": f"solc-js {result['version']}",
                "settings": {k: v for k, v in SETTINGS.items() if k != "outputSelection"},
                "abi": data["abi"],
                "bytecode": "0x" + data["evm"]["bytecode"]["object"],
                "deployedBytecode": "0x" + data["evm"]["deployedBytecode"]["object"],
            }
    return artifacts


def render(artifact: dict[str, Any]) -> str:
    """The exact text written to disk (the drift test compares this)."""
    return json.dumps(artifact, indent=1, sort_keys=True) + "\n"


def write(artifacts: dict[str, dict[str, Any]]) -> list[Path]:
    """Write the artifacts, removing stale ones; returns the paths written."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    written = []
    for name, artifact in artifacts.items():
        path = ARTIFACTS / f"{name}.json"
        path.write_text(render(artifact), encoding="utf-8")
        written.append(path)
    for stale in set(ARTIFACTS.glob("*.json")) - set(written):
        stale.unlink()
    return written


def main() -> None:
    """``python -m pot.settlement.compiling``: recompile and rewrite the artifacts."""
    try:
        paths = write(compile_all())
    except errors.PotError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(1)
    for p in paths:
        sys.stdout.write(f"{p.relative_to(REPO)}\n")


if __name__ == "__main__":
    main()
