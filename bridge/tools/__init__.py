"""Small command-line tools around the bridge: check, send, listen, demo.

Each is a thin ``main(argv) -> int``; the logic they drive lives in the library modules.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default (unless None, False or already named in its help)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "%(default)" in text or "default" in text or action.default in (
                None, False, argparse.SUPPRESS) or action.option_strings == []:
            return text
        if action.default == [] or action.nargs == 0:
            return text
        return f"{text} (default: %(default)s)"


class RawHelpFormatter(HelpFormatter):
    """HelpFormatter that fills one-line paragraphs and keeps written line breaks (examples)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = text.strip("\n").split("\n\n")
        return "\n\n".join(
            "\n".join(indent + line for line in para.splitlines()) if "\n" in para.strip()
            else super(RawHelpFormatter, self)._fill_text(para, width, indent)
            for para in paragraphs)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that exits 2 with ``spikebridge CMD: error: ...`` (argparse's own convention).

    Every command uses it, so every --help shows defaults and keeps its example lines as
    written (RawHelpFormatter unless a command picks another).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", RawHelpFormatter)
        super().__init__(*args, **kwargs)


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
