"""A one-line progress display that rewrites itself on a terminal and stays silent otherwise.

Callers pass ``now_ns``; it redraws at most every ``interval_ns``. It never writes when its
stream is not a TTY (so piped output and logs stay clean) unless forced on.
"""

from __future__ import annotations

import shutil
import sys
from typing import TextIO


class ProgressLine:
    """``update(now_ns, text)`` redraws in place; ``close()`` ends the line."""

    def __init__(
        self, stream: TextIO | None = None, *, enabled: bool | None = None,
        interval_ns: int = 250_000_000,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = self.stream.isatty()
        self.enabled = enabled
        self.interval_ns = interval_ns
        self._next_ns: int | None = None
        self._shown = False

    def update(self, now_ns: int, text: str, force: bool = False) -> None:
        """Show ``text`` if the last redraw is at least ``interval_ns`` old (or ``force``)."""
        if not self.enabled:
            return
        if not force and self._next_ns is not None and now_ns < self._next_ns:
            return
        self._next_ns = now_ns + self.interval_ns
        width = shutil.get_terminal_size((100, 24)).columns - 1
        self.stream.write("\r" + text[:width].ljust(width))
        self.stream.flush()
        self._shown = True

    def close(self, text: str | None = None) -> None:
        """Finish the line (optionally with a last ``text``)."""
        if not self.enabled:
            return
        if text is not None:
            self.update(0, text, force=True)
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


def human_rate(count: float, seconds: float) -> str:
    """``count`` per second, compact (e.g. ``1.2k/s``)."""
    if seconds <= 0:
        return "-"
    rate = count / seconds
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if rate >= size:
            return f"{rate / size:.1f}{unit}/s"
    return f"{rate:.1f}/s"
