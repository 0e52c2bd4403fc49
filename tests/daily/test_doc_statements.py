"""The docs state one rule where the code has one (issue 13, item 8)."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.config import load_config
from bridge.service.daemon import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def text() -> str:
    return "\n".join(p.read_text() for p in DOCS)


def test_relative_processor_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    (sub / "c.toml").write_text('[bridge]\nprocessor = "brian2:net.py"\n'
                                '[[input]]\nurl = "udp://127.0.0.1:1?neurons=4"\n')
    assert load_config(str(sub / "c.toml")).processor == f"brian2:{sub / 'net.py'}"
    docs = text()
    assert "working directory; under systemd use an" not in docs
    assert not re.search(r"relative to the directory the daemon starts in", docs + "".join(
        p.read_text() for p in (REPO / "examples").glob("*.toml")))


def test_the_config_file_is_called_spikebridge_toml_everywhere() -> None:
    assert not re.search(r"(?<![\w-])bridge\.toml", text())


def test_sighup_is_described_alike_in_run_help_and_operations() -> None:
    helptext = " ".join(build_parser().format_help().split())
    ops = " ".join((REPO / "docs" / "operations.md").read_text().split())
    for what in ("[watchdog]", "allow=", "key=", "source=", "max_age_ms", "on_error"):
        assert what in helptext and what in ops, what


def test_no_stale_statement_about_unlisted_benchmarks() -> None:
    from bridge.bench import BENCHES

    assert {"overload", "fuzz"} <= set(BENCHES)
    assert "Until `overload` and `fuzz` are listed" not in text()


def test_the_usage_points_at_the_page_that_lists_the_url_keys() -> None:
    from bridge.cli import usage

    assert "docs/configuration.md" in usage()
    page = (REPO / "docs" / "configuration.md").read_text()
    assert "| `neurons` |" in page and "| `offset` |" in page
