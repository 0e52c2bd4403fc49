"""Every command's argparse parser, gathered into one tree, without running any command.

The man page and the shell completions are generated from this tree, so they list exactly the
commands and options that ``spikebridge`` accepts. A command module exposes its parser as
``build_parser() -> ArgumentParser``; ``main(argv)`` builds it the same way. A module that does
not (yet) has its parser captured instead: its ``main`` is called with ``parse_args`` replaced
by a function that stops it there, so only the parser's construction runs (the patch is
process-wide while it lasts: call this from a command, never from a running daemon).

It must never run a command, open a socket or device, or write anything.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from bridge import __version__

# Commands whose target is a table of further commands: name -> "module:TABLE".
SUBTABLES: dict[str, str] = {"bench": "bridge.bench:BENCHES"}

DESCRIPTION = ("A real-time bridge for spiking neural networks: it moves spike frames between "
               "UDP peers, a Brian2 network stepped with the wall clock, and serial boards and "
               "event sensors. Run 'spikebridge COMMAND --help' for a command's options.")


class _Captured(Exception):
    """Raised in place of parse_args: carries the parser that a main() had built."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def _capture(main: Callable[..., Any], where: str) -> argparse.ArgumentParser:
    """The parser ``main`` builds, stopped at its ``parse_args`` call."""
    original = argparse.ArgumentParser.parse_args

    def stop(self: argparse.ArgumentParser, *_args: object, **_kw: object) -> Any:
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = stop  # type: ignore[method-assign]
    try:
        main([])
    except _Captured as got:
        return got.parser
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    raise LookupError(f"{where}: main() returned without building an ArgumentParser")


def command_parser(target: str) -> argparse.ArgumentParser:
    """The parser of the command whose entry point is ``target`` ("module:function")."""
    module_name, _, func = target.partition(":")
    module = importlib.import_module(module_name)
    build = getattr(module, "build_parser", None)
    if callable(build):
        parser = build()
        if not isinstance(parser, argparse.ArgumentParser):
            raise TypeError(f"{module_name}.build_parser() returned {type(parser).__name__}")
        return parser
    return _capture(getattr(module, func), target)


def _table(spec: str) -> Mapping[str, tuple[str, str]]:
    module_name, _, attr = spec.partition(":")
    table: Mapping[str, tuple[str, str]] = getattr(importlib.import_module(module_name), attr)
    return table


def _attach(sub: Any, name: str, parser: argparse.ArgumentParser, text: str) -> None:
    """Add ``parser`` as subcommand ``name``: its actions, groups, texts and formatter."""
    sub.add_parser(name, parents=[parser], add_help=False, help=text,
                   description=parser.description, epilog=parser.epilog,
                   formatter_class=parser.formatter_class)


def command_tree(commands: Mapping[str, tuple[str, str]] | None = None) -> argparse.ArgumentParser:
    """One parser: ``spikebridge`` with every command (and bench's benchmarks) as subcommands."""
    if commands is None:
        from bridge.cli import COMMANDS

        commands = COMMANDS
    root = argparse.ArgumentParser(prog="spikebridge", description=DESCRIPTION)
    root.add_argument("-V", "--version", action="version", version=f"spikebridge {__version__}")
    sub = root.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (target, text) in commands.items():
        if name in SUBTABLES:
            group = sub.add_parser(name, help=text, description=text)
            inner = group.add_subparsers(dest=f"{name}_command", metavar="NAME", title=name)
            for sub_name, (sub_target, sub_text) in _table(SUBTABLES[name]).items():
                _attach(inner, sub_name, command_parser(sub_target), sub_text)
        else:
            _attach(sub, name, command_parser(target), text)
    return root


def walk(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``(prog, parser)`` for ``parser`` and every subcommand parser below it, depth first."""
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from walk(child)
