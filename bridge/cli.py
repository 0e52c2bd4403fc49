"""The ``spikebridge`` command: a table of subcommands, each a thin ``main(argv) -> int``.

Subcommand modules are imported only when chosen, so ``spikebridge send`` never pays for
Brian2 or matplotlib. Every command follows EXIT_CODES (also in docs/cli.md).
"""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from collections.abc import Sequence

from bridge import __version__

# name -> ("module:function", one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("bridge.service.daemon:main", "run the bridge daemon from a config or --in/--out"),
    "check": ("bridge.tools.check:main", "validate a config file and exit (0 ok, 2 bad)"),
    "send": ("bridge.tools.send:main", "send spike frames to an endpoint URL"),
    "listen": ("bridge.tools.listen:main", "print the frames arriving at an endpoint URL"),
    "demo": ("bridge.tools.demo:main", "a self-contained loopback demo with live figures"),
    "record": ("bridge.record.recorder_cli:main", "record frames from a URL to a .sbr file"),
    "replay": ("bridge.record.player_cli:main", "replay a .sbr file to a URL, original timing"),
    "plot": ("bridge.record.plot:main", "draw a raster plot of a .sbr file"),
    "convert": ("bridge.record.convert:main", "convert .sbr to and from CSV / NumPy .npz"),
    "top": ("bridge.record.top:main", "live terminal view of an endpoint or a running daemon"),
    "emulate": ("bridge.emulate.cli:main", "run an eDVS or board emulator behind a pty"),
    "prebuild": ("bridge.prebuild:main", "compile a config's Brian2 network ahead of time"),
    "bench": ("bridge.bench:main", "benchmarks: relay, stepped, serial, ..."),
    "deploy": ("bridge.tools.deploy:main", "write the units, udev rule, dashboards, examples"),
    "completion": ("bridge.tools.completion:main", "print the bash or zsh completion script"),
    "man": ("bridge.tools.manpage:main", "print the spikebridge(1) manual page"),
}


# The one exit-code table every command follows (docs/cli.md).
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "success"),
    (1, "a runtime failure after the command started: a device lost for good, a step"
        " function that raised with on_error = \"stop\", no daemon answering top"),
    (2, "bad usage or config, found before anything ran: a bad argument, key or file, a port"
        " in use, a missing device, a missing optional package"),
)


def usage() -> str:
    """The top-level help text."""
    width = max(len(n) for n in COMMANDS)
    lines = [
        "usage: spikebridge COMMAND [ARGS...]",
        "",
        "A real-time bridge for spiking neural networks: UDP peers, Brian2, serial boards.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()),
        "",
        "exit codes (every command):",
        *(textwrap.fill(text, 88, initial_indent=f"  {code}  ", subsequent_indent="     ")
          for code, text in EXIT_CODES),
        "",
        "Run 'spikebridge COMMAND --help' for a command's options.",
        "Endpoint URLs: udp://HOST:PORT, mcast://GROUP:PORT, serial:DEVICE, file:PATH.sbr,",
        "loop://NAME, dv+tcp://HOST:PORT, each with ?format=...&neurons=...&offset=...",
        "(see docs/configuration.md; event cameras: docs/event-cameras.md).",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand; returns the process exit code."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (``spikebridge listen ... | head``): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        print(f"spikebridge {__version__}")
        return 0
    if args[0] not in COMMANDS:
        print(f"spikebridge: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return dispatch("spikebridge", COMMANDS, args)


def dispatch(prog: str, table: dict[str, tuple[str, str]], args: Sequence[str]) -> int:
    """Import ``table[args[0]]`` ("module:function") and call it with the remaining args."""
    name = args[0]
    module, _, func = table[name][0].partition(":")
    try:
        target = getattr(importlib.import_module(module), func)
    except ImportError as exc:
        print(f"{prog} {name}: not available in this installation: {exc}", file=sys.stderr)
        return 2
    code: int = target(list(args[1:]))
    return code
