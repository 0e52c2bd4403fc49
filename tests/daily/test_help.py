"""Every command's --help follows the same rules (issue 13, deliverable 3).

Walks each command's and benchmark's ``build_parser()`` (or the parser its main builds).
"""

from __future__ import annotations

import argparse

import pytest

from bridge.bench import BENCHES
from bridge.cli import COMMANDS
from bridge.tools.parsers import command_parser

TARGETS = {f"spikebridge {name}": target for name, (target, _) in COMMANDS.items()
           if name != "bench"}
TARGETS.update({f"spikebridge bench {name}": target for name, (target, _) in BENCHES.items()})
INTERNAL = ("anchor", "ancestor", "the issue")
OLD = ("--seconds", "--timeout", "--dt-ms", "--spin")


def parser_of(prog: str) -> argparse.ArgumentParser:
    try:
        return command_parser(TARGETS[prog])
    except ImportError as exc:  # an optional extra (torch, sPyNNaker) missing
        pytest.skip(f"{prog}: {exc}")


def visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]


@pytest.mark.parametrize("prog", sorted(TARGETS))
def test_help_has_no_markup_no_internal_words_and_an_example(prog: str) -> None:
    text = parser_of(prog).format_help()
    assert "``" not in text
    assert not [w for w in INTERNAL if w in text.lower()], text
    assert f"{prog} " in text.split("\n\n", 2)[-1] and "example" in text, text


@pytest.mark.parametrize("prog", sorted(TARGETS))
def test_every_option_with_a_default_shows_it(prog: str) -> None:
    parser = parser_of(prog)
    formatter = parser._get_formatter()
    missing = []
    for action in visible(parser):
        default = action.default
        if (action.nargs == 0 or default is None or default is False or default == []
                or default == argparse.SUPPRESS):
            continue
        if "default" not in formatter._expand_help(action):
            missing.append(action.option_strings[-1])
    assert not missing, f"{prog}: no default shown for {missing}"


@pytest.mark.parametrize("prog", sorted(TARGETS))
def test_one_name_per_concept(prog: str) -> None:
    parser = parser_of(prog)
    names = {s for a in visible(parser) for s in a.option_strings}
    assert {"-q", "--quiet", "--log-level"} <= names
    assert not names & set(OLD), f"{prog} shows an old spelling: {names & set(OLD)}"
    for action in visible(parser):
        if action.metavar == "SECONDS":
            assert "--duration" in action.option_strings, action.option_strings
        if action.metavar == "US":
            assert "--spin-us" in action.option_strings or "--spin" not in action.dest
        if "--json" in action.option_strings:
            assert action.nargs == "?" and action.const == "-", f"{prog}: --json [FILE]"
        if "--metrics" in action.option_strings:
            assert action.metavar == "HOST:PORT" and "URL" in (action.help or ""), prog
        if "--dt" in action.option_strings:
            assert action.metavar == "MS"


@pytest.mark.parametrize(("prog", "argv", "dest", "value"), [
    ("spikebridge bench relay", ["--seconds", "2"], "seconds", 2.0),
    ("spikebridge bench stepped", ["--spin", "5"], "spin", 5.0),
    ("spikebridge bench scrape", ["--seconds", "3"], "seconds", 3.0),
    ("spikebridge listen", ["--timeout", "4", "udp://127.0.0.1:1"], "timeout", 4.0),
    ("spikebridge convert", ["--dt-ms", "0.5", "a.sbr", "b.npz"], "dt_ms", 0.5),
    ("spikebridge demo", ["--seconds", "1"], "seconds", 1.0),
])
def test_old_spellings_work_with_a_deprecation_note(prog: str, argv: list[str], dest: str,
                                                    value: float,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    ns = parser_of(prog).parse_args(argv)
    assert getattr(ns, dest) == value
    assert f"{argv[0]} is deprecated; use --" in capsys.readouterr().err


def test_json_alone_goes_to_stdout_and_with_a_file_there() -> None:
    parser = parser_of("spikebridge bench replay")
    assert parser.parse_args(["--json"]).json == "-"
    assert parser.parse_args(["--json", "r.json"]).json == "r.json"
    assert parser.parse_args([]).json is None


def test_metrics_takes_host_port_or_a_url() -> None:
    from bridge.config import parse_listen
    from bridge.tools import metrics_url

    assert parse_listen("http://127.0.0.1:9877/metrics") == ("127.0.0.1", 9877)
    assert parse_listen("127.0.0.1:9877") == ("127.0.0.1", 9877)
    assert metrics_url("127.0.0.1:9877") == "http://127.0.0.1:9877/metrics"
    assert metrics_url("http://127.0.0.1:1/x") == "http://127.0.0.1:1/x"


def test_quiet_drops_the_summary_of_send(capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.cli import main

    url = "udp://127.0.0.1:9?format=native"
    assert main(["send", url, "--ids", "1"]) == 0
    assert "sent 1 datagram(s)" in capsys.readouterr().err
    assert main(["send", url, "--ids", "1", "-q"]) == 0
    assert capsys.readouterr().err == ""
