"""Every command block in README.md and docs/*.md runs as documented (issue 13, item 8).

A command block is a fenced block marked ``sh``/``bash``/``console``, or an unmarked one whose
every line starts with a command. It runs in a scratch directory holding a copy of
``examples/`` and ``deploy/`` (tests/daily/shell.py): ports rewritten to free ones, every
host rewritten to 127.0.0.1, long-running lines ended with SIGINT, ``--duration`` made short.
Each line must exit 0, or the code a ``<!-- exit: N -->`` comment before the block gives.

A block that needs what a test machine cannot give is marked, in the line before it, with
``<!-- needs: REASON -->`` (hardware, root, network, a peer's own software, ...): it is
reported as a skip with that reason, never silently dropped. Blocks whose commands take long
(a Brian2 compile, a benchmark) carry ``<!-- slow -->`` and run under the slow marker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daily.shell import REPO, Scratch, logical_lines

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGS = {"sh", "bash", "console", "shell"}
COMMANDS = {"spikebridge", "python", "python3", "pip", "pytest", "./dev", "install",
            "systemctl", "journalctl", "udevadm", "runuser", "ln", "apt-get", "ip", "sudo",
            "faery", "aestream", "cpupower", "echo", "for", "ls", "cd", "curl"}
FENCE = re.compile(r"^([ \t]*)```(\w*)\n(.*?)^[ \t]*```", re.S | re.M)
# What an unmarked block may run here; anything else (root, installs, other programs) must be
# marked and is then never started.
SAFE = {"spikebridge", "python", "python3"}
MARK = re.compile(r"<!--\s*(needs|exit|slow)\s*:?\s*(.*?)\s*-->")


@dataclass
class Block:
    """One command block of a document."""

    where: str
    lines: list[str]
    needs: str | None = None
    exit: int = 0
    slow: bool = False


def blocks(path: Path) -> list[Block]:
    """The command blocks of ``path`` with the markers before each."""
    text = path.read_text()
    found = []
    for m in FENCE.finditer(text):
        _indent, lang, body = m.groups()
        lines = logical_lines(body)
        if not lines:
            continue
        if lang not in SHELL_LANGS and not (
                lang == "" and all(line.split()[0] in COMMANDS for line in lines)):
            continue
        lineno = text.count("\n", 0, m.start()) + 1
        before = text[:m.start()].rstrip("\n").rsplit("\n\n", 1)[-1]
        block = Block(f"{path.relative_to(REPO)}:{lineno}", lines)
        for kind, arg in MARK.findall(before):
            if kind == "needs":
                block.needs = arg or "unstated"
            elif kind == "exit":
                block.exit = int(arg)
            else:
                block.slow = True
        found.append(block)
    return found


ALL = [b for path in DOCS for b in blocks(path)]


def params() -> list[object]:
    out: list[object] = []
    for b in ALL:
        marks = [pytest.mark.slow, pytest.mark.timeout(900)] if b.slow else []
        out.append(pytest.param(b, id=b.where, marks=marks))
    return out


def unsafe(block: Block) -> list[str]:
    """The lines of ``block`` that start something other than spikebridge or python."""
    return [line for line in block.lines if line.split()[0] not in SAFE
            or (line.split()[0].startswith("python") and "examples/" not in line)]


def test_the_docs_have_command_blocks_and_each_unmarked_one_is_safe_to_run() -> None:
    assert len(ALL) > 20
    bad = {b.where: unsafe(b) for b in ALL if b.needs is None and unsafe(b)}
    assert not bad, f"mark these with <!-- needs: REASON -->: {bad}"


@pytest.mark.parametrize("block", params())
def test_doc_block_runs(block: Block, tmp_path: Path) -> None:
    if block.needs is not None:
        pytest.skip(f"{block.where} needs {block.needs}")
    assert not unsafe(block), f"{block.where}: not run, it needs a marker: {unsafe(block)}"
    scratch = Scratch.make(tmp_path, loopback_all=True)
    outcomes = scratch.run_block(block.lines, duration="0.5", timeout=120)
    bad = [o for o in outcomes if o.code != block.exit]
    assert not bad, "\n".join(f"{block.where}: {o.line} -> {o.code} (want {block.exit})\n"
                              f"{o.output[-1500:]}" for o in bad)
