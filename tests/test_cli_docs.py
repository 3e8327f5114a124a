"""Every ``pot ...`` command line that README.md and docs/*.md show exists, flags included."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import typer

from pot import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_SPAN = re.compile(r"`(pot [^`]+)`")
_LINE = re.compile(r"^\s*(?:\$\s+)?(pot [a-z].*)$")


def shown_command_lines() -> list[tuple[str, str]]:
    """(where, command line) for each ``pot`` invocation in a code span or a code block."""
    found = []
    for doc in DOCS:
        in_block = False
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_block = not in_block
                continue
            where = f"{doc.relative_to(ROOT)}:{number}"
            spans = _SPAN.findall(line)
            if in_block and (m := _LINE.match(line)):
                spans.append(m.group(1).split("#", 1)[0])
            found += [(where, s.rstrip(" \\")) for s in spans]
    return found


@functools.cache
def root() -> Any:
    """The ``pot`` command tree (typer carries its own click)."""
    cli._register()
    return typer.main.get_command(cli.app)


def resolve(words: list[str]) -> tuple[Any, list[str]]:
    """The command ``words`` name, and the words after it; KeyError on an unknown one."""
    command = root()
    rest = words[1:]  # after "pot"
    while hasattr(command, "commands") and rest and re.fullmatch(r"[a-z][a-z-]*", rest[0]):
        sub = command.commands.get(rest[0])
        if sub is None:
            raise KeyError(f"{' '.join(words[: len(words) - len(rest)])} has no {rest[0]!r}")
        command, rest = sub, rest[1:]
    return command, rest


def test_docs_show_pot_commands() -> None:
    assert len(shown_command_lines()) > 10
    with pytest.raises(KeyError):
        resolve(["pot", "chain", "frobnicate"])


@pytest.mark.parametrize(("where", "line"), shown_command_lines())
def test_shown_command_exists(where: str, line: str) -> None:
    words = line.replace("[", " ").replace("]", " ").replace("|", " ").split()
    command, rest = resolve(words)
    assert not hasattr(command, "commands") or not rest, f"{where}: {line}"
    options = {o for p in command.params for o in getattr(p, "opts", [])}
    for word in rest:
        flag = word.split("=", 1)[0]
        if flag.startswith("--"):
            assert flag in options, f"{where}: {line}: no option {flag}"
