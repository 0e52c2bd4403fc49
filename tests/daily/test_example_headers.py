"""Every example's header command lines work as written (issue 13, deliverable 2).

The fast test checks that each ``spikebridge run`` line is accepted (the overrides it names
apply to the file); the slow one runs each header's lines for real, ports rewritten to free
ones and each run bounded by a short --duration or ended with SIGINT.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from bridge.service import daemon
from tests.daily.shell import REPO, Scratch

HEADER_LINE = re.compile(r"^#\s{2,}((?:spikebridge|python) .*?)(?:\s{2,}#.*)?$")


def header(path: Path) -> list[str]:
    """The command lines in an example's leading comment block."""
    lines = []
    for text in path.read_text().splitlines():
        if not text.startswith("#"):
            break
        m = HEADER_LINE.match(text)
        if m:
            lines.append(m.group(1).strip())
    return lines


EXAMPLES = sorted((REPO / "examples").glob("*.toml"))


def test_every_example_has_header_lines() -> None:
    assert EXAMPLES and all(header(p) for p in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_header_run_line_is_accepted(example: Path, tmp_path: Path) -> None:
    scratch = Scratch.make(tmp_path)
    runs = [line for line in header(example) if line.startswith("spikebridge run ")]
    assert runs, f"{example.name} has no run line"
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        for line in runs:
            argv = shlex.split(scratch.prepare(line))[2:]
            cfg, problem, _ = daemon.parse_args(argv)
            assert problem is None and cfg is not None, f"{line}: {problem}"
            if "--duration" in argv:
                assert cfg.duration_ns == round(float(argv[argv.index("--duration") + 1]) * 1e9)
            if "--repetitions" in argv:
                assert cfg.repetitions == int(argv[argv.index("--repetitions") + 1])
    finally:
        os.chdir(here)


@pytest.mark.slow
@pytest.mark.timeout(900)  # a cold Brian2 compile of CUBA on a loaded machine
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_header_runs_as_written(example: Path, tmp_path: Path) -> None:
    if "nir" in example.name:
        pytest.importorskip("torch", reason="the NIR example exports its model with snnTorch")
    scratch = Scratch.make(tmp_path)
    outcomes = scratch.run_block(header(example), duration="0.5", timeout=300)
    failed = [o for o in outcomes if o.code != 0]
    assert not failed, "\n".join(f"{o.line} -> {o.code}\n{o.output[-2000:]}" for o in failed)
