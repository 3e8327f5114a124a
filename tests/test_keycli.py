"""`pot key`: key files for the install walkthrough, as users run it (real subprocesses).
A key never reaches stdout or stderr; an existing file is never overwritten."""

from __future__ import annotations

import stat
from pathlib import Path

from pot import keys
from pot.settlement import cli as chain_cli
from tests.test_cli import run


def test_new_writes_private_key_files_and_prints_only_addresses(tmp_path: Path) -> None:
    files = [tmp_path / f"validator-{i}.key" for i in range(4)]
    out = run("key", "new", *map(str, files))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 4
    for path, line in zip(files, lines, strict=True):
        key = keys.from_file(path)
        assert line == f"{path} {key.address}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert key.secret.hex() not in out.stdout + out.stderr
    assert len({keys.from_file(p).address for p in files}) == 4  # fresh keys, not one
    # `pot key address` is the --validators file `pot chain deploy` reads.
    listed = run("key", "address", *map(str, files))
    assert listed.returncode == 0, listed.stderr
    addresses = tmp_path / "addresses.txt"
    addresses.write_text(listed.stdout)
    assert chain_cli.read_validators(addresses) == [keys.from_file(p).address for p in files]


def test_new_never_overwrites_and_writes_nothing_when_one_exists(tmp_path: Path) -> None:
    kept = tmp_path / "miner-1.key"
    kept.write_text("0x" + "11" * 32 + "\n")
    fresh = tmp_path / "miner-0.key"
    out = run("key", "new", str(fresh), str(kept))
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: {kept}: exists; not overwriting a key file"
    assert not fresh.exists()
    assert kept.read_text() == "0x" + "11" * 32 + "\n"


def test_address_of_a_bad_file_is_one_line_without_its_content(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("0x" + "zz" * 32)
    out = run("key", "address", str(bad))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"error: key file {bad}") and "zz" not in out.stderr
    missing = run("key", "address", str(tmp_path / "nope.key"))
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: key file {tmp_path / 'nope.key'}: no such file"
