"""Every command's parser is reachable without running the command, and is the one main uses."""

from __future__ import annotations

import argparse
import importlib
import sys
import types

import pytest

from bridge.bench import BENCHES
from bridge.cli import COMMANDS
from bridge.tools.parsers import command_parser, command_tree, walk

ENTRIES = [(f"spikebridge {name}", target) for name, (target, _) in COMMANDS.items()
           if name != "bench"]
ENTRIES += [(f"spikebridge bench {name}", target) for name, (target, _) in BENCHES.items()]


@pytest.mark.parametrize(("prog", "target"), ENTRIES, ids=[p for p, _ in ENTRIES])
def test_every_command_has_a_parser(prog: str, target: str) -> None:
    parser = command_parser(target)
    assert parser.prog == prog
    assert argparse.ArgumentParser.parse_args.__name__ == "parse_args"  # restored


@pytest.mark.parametrize(("prog", "target"), ENTRIES, ids=[p for p, _ in ENTRIES])
def test_main_uses_the_same_parser(prog: str, target: str, capsys) -> None:
    module, _, func = target.partition(":")
    main = getattr(importlib.import_module(module), func)
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == command_parser(target).format_help()


def test_the_tree_holds_every_command_and_benchmark() -> None:
    progs = {prog for prog, _ in walk(command_tree())}
    assert progs == {"spikebridge", "spikebridge bench", *(p for p, _ in ENTRIES)}


def test_capture_stops_at_parse_args_and_restores_it(monkeypatch) -> None:
    """A module without build_parser: only the parser's construction runs."""
    ran: list[str] = []

    def main(argv):  # type: ignore[no-untyped-def]
        parser = argparse.ArgumentParser(prog="spikebridge fake")
        parser.add_argument("--colour")
        parser.parse_args(argv)
        ran.append("past parse_args")
        return 0

    fake = types.ModuleType("fake_command")
    fake.main = main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_command", fake)
    parser = command_parser("fake_command:main")
    assert parser.prog == "spikebridge fake" and not ran
    assert argparse.ArgumentParser.parse_args(parser, ["--colour", "red"]).colour == "red"


def test_a_main_that_builds_no_parser_is_an_error(monkeypatch) -> None:
    fake = types.ModuleType("fake_command2")
    fake.main = lambda argv: 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_command2", fake)
    with pytest.raises(LookupError, match="fake_command2:main"):
        command_parser("fake_command2:main")
