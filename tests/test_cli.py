"""The `pot` command as users run it: real subprocesses, one clear line on error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

POT = [sys.executable, "-m", "pot"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*POT, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def test_help_lists_commands() -> None:
    out = run("--help")
    assert out.returncode == 0
    for command in ("version", "cid"):
        assert command in out.stdout


def test_cid_of_hello_world(tmp_path: Path) -> None:
    f = tmp_path / "hello.txt"
    f.write_bytes(b"hello world")
    out = run("cid", str(f))
    assert out.returncode == 0
    assert out.stdout.strip() == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    out = run("cid", str(tmp_path / "nope"))
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: {tmp_path / 'nope'}: no such file"
    assert "Traceback" not in out.stderr


def test_directory_is_refused(tmp_path: Path) -> None:
    out = run("cid", str(tmp_path))
    assert out.returncode == 1
    assert "is a directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_arguments_give_usage_not_traceback() -> None:
    for args in (["cid"], ["no-such-command"], ["cid", "--bogus-flag", "x"]):
        out = run(*args)
        assert out.returncode == 2, args
        assert "Traceback" not in out.stderr
        assert "Usage" in out.stderr


def test_version() -> None:
    out = run("version")
    assert out.returncode == 0
    assert out.stdout.strip() == "0.1.0"


def test_every_benchmark_is_a_command_by_its_name() -> None:
    # Issues and docs say `pot bench pbft`; `pot bench run NAME|all` stays.
    names = run("bench", "list").stdout.split()
    assert {"pbft", "trainer", "settlement"} <= set(names)
    helptext = run("bench", "--help").stdout
    for name in names:
        assert f"bench/{name}.py" in helptext
    out = run("bench", "pbft", "--help")
    assert out.returncode == 0 and "--quick" in out.stdout


def test_unknown_benchmark_is_one_line() -> None:
    out = run("bench", "run", "nosuch")
    assert out.returncode == 1
    assert "no benchmark named 'nosuch'" in out.stderr
    assert "Traceback" not in out.stderr
