"""Small command-line tools around the bridge: check, send, listen, demo.

Each is a thin ``main(argv) -> int``; the logic they drive lives in the library modules.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from typing import Any


def finite_float(text: str) -> float:
    """argparse type for numbers: a float, refusing nan and inf (exit 2 naming the option)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default (unless None, False or already named in its help)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("default" in text or not action.option_strings or action.nargs == 0
                or default is None or default is False or default == []
                or default == argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


    def _expand_help(self, action: argparse.Action) -> str:
        return super()._expand_help(action).replace("``", "")  # docstring markup, not for --help


class RawHelpFormatter(HelpFormatter):
    """HelpFormatter that fills one-line paragraphs and keeps written line breaks (examples)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = text.replace("``", "").strip("\n").split("\n\n")
        return "\n\n".join(
            "\n".join(indent + line for line in para.splitlines())
            if any(line[:1].isspace() for line in para.strip("\n").splitlines()[1:])
            else super(RawHelpFormatter, self)._fill_text(para, width, indent)
            for para in paragraphs)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that exits 2 with ``spikebridge CMD: error: ...`` (argparse's own convention);
    ``type=float`` options refuse nan and inf.

    Every command uses it, so every --help shows defaults and keeps its example lines as
    written (RawHelpFormatter unless a command picks another).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", RawHelpFormatter)
        kwargs.setdefault("conflict_handler", "resolve")  # a command's own -q/--log-level wins
        super().__init__(*args, **kwargs)
        self.register("type", float, finite_float)
        if self.add_help:
            add_logging(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        ns, extra = super().parse_known_args(args, namespace)
        if getattr(self, "sets_logging", True):
            apply_logging(ns)
        return ns, extra


LOG_LEVELS = ("debug", "info", "warning", "error")


def add_logging(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet`` and ``--log-level``, the same on every command."""
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print no summary; log warnings and errors only")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=None,
                        help="log threshold (default: info, warning with --quiet)")


def apply_logging(ns: argparse.Namespace) -> None:
    """Set the ``spikebridge`` loggers' threshold from ``--log-level`` / ``--quiet``."""
    import logging

    level = getattr(ns, "log_level", None)
    if level is None:
        level = "warning" if getattr(ns, "quiet", False) else "info"
    logger = logging.getLogger("spikebridge")
    logger.setLevel(level.upper())
    logging.getLogger("bridge").setLevel(level.upper())
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
        logger.setLevel(level.upper())


class _Deprecated(argparse.Action):
    """A hidden old spelling of an option: works as the new one, with a one-line note."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "",
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"{parser.prog}: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def deprecated(parser: argparse.ArgumentParser, old: str, new: str, dest: str,
               **kwargs: Any) -> None:
    """A hidden old spelling ``old`` of option ``new`` (kwargs: type, or nargs=0, const)."""
    parser.add_argument(old, dest=dest, new=new, action=_Deprecated,
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)


def _option(parser: argparse.ArgumentParser, new: str, old: tuple[str, ...], dest: str,
            **kwargs: Any) -> argparse.Action:
    action = parser.add_argument(new, dest=dest, **kwargs)
    extra = {"type": kwargs["type"]} if "type" in kwargs else {}
    for spelling in old:
        parser.add_argument(spelling, dest=dest, **extra, new=new,
                            action=_Deprecated, default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)
    return action


def add_duration(parser: argparse.ArgumentParser, help: str, *, dest: str = "duration",
                 default: float | None = None,
                 old: tuple[str, ...] = ("--seconds",)) -> argparse.Action:
    """``--duration SECONDS`` (old spellings kept as hidden deprecated aliases)."""
    return _option(parser, "--duration", old, dest, type=float, default=default,
                   metavar="SECONDS", help=help)


def add_dt(parser: argparse.ArgumentParser, help: str, *, dest: str = "dt",
           default: float | None = None, old: tuple[str, ...] = ("--dt-ms",)) -> argparse.Action:
    """``--dt MS``, a step in milliseconds."""
    return _option(parser, "--dt", old, dest, type=float, default=default, metavar="MS",
                   help=help)


def add_spin_us(parser: argparse.ArgumentParser, help: str, *, dest: str = "spin_us",
                default: float = 0.0, old: tuple[str, ...] = ("--spin",)) -> argparse.Action:
    """``--spin-us US``, a busy-wait before each deadline in microseconds."""
    return _option(parser, "--spin-us", old, dest, type=float, default=default, metavar="US",
                   help=help)


def add_json(parser: argparse.ArgumentParser, what: str = "the results") -> argparse.Action:
    """``--json [FILE]``: alone, JSON to stdout; with FILE, JSON written there."""
    return parser.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                               help=f"{what} as JSON: to stdout, or to FILE when given")


def json_stream(target: str) -> Any:
    """Where ``--json`` output goes: stdout for "-", else FILE opened for writing."""
    return sys.stdout if target == "-" else open(target, "w", encoding="utf-8")


def write_json(target: str, obj: Any, **kwargs: Any) -> None:
    """Write ``obj`` as indented JSON where ``--json`` says (stdout for "-")."""
    import json

    text = json.dumps(obj, indent=2, **kwargs)
    if target == "-":
        print(text)
    else:
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


def metrics_url(text: str) -> str:
    """``--metrics`` for a scraper: ``HOST:PORT``, ``:PORT`` or a URL -> the page's URL."""
    if "://" in text:
        return text
    from bridge.config import parse_listen

    host, port = parse_listen(text, "--metrics")
    return f"http://{host}:{port}/metrics"


class StopFlag:
    """Set by SIGINT or SIGTERM, for tools that loop until the user stops them."""

    def __init__(self) -> None:
        self.set = False
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, _sig: int, _frame: object) -> None:
        self.set = True

    def __bool__(self) -> bool:
        return self.set


def error(prog: str, message: str) -> int:
    """Print a user-facing error for ``prog`` and return exit code 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def parse_ids(text: str) -> list[int]:
    """Parse ``1,7,10-12`` into ids; ValueError naming the bad part."""
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        try:
            if dash:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                ids.extend(range(a, b + 1))
            else:
                ids.append(int(part))
        except ValueError:
            raise ValueError(f"not an id or range: {part!r}") from None
    if any(i < 0 or i > 0xFFFFFFFF for i in ids):
        raise ValueError("ids must be in 0..2**32-1")
    return ids
