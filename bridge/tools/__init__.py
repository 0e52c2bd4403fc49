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


class ArgumentParser(argparse.ArgumentParser):
    """argparse that exits 2 with ``spikebridge CMD: error: ...`` (argparse's own convention);
    ``type=float`` options refuse nan and inf."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("type", float, finite_float)


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
