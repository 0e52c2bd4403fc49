"""The user's code that a processor spec names: call signatures checked before anything runs,
and tracebacks that show the user's frames.

It never imports, calls or edits the user's code: it inspects function objects that the
processor has already loaded, and formats exceptions that the user's code has raised.
"""

from __future__ import annotations

import inspect
import os
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from bridge.errors import ConfigError

_OURS = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # bridge/


def check_call(fn: Callable[..., Any], args: Sequence[str], *, what: str, label: str) -> None:
    """ConfigError unless ``fn`` can be called with the positional arguments named ``args``.

    Coroutine and generator functions are refused too: spikebridge calls them and uses what
    they return. A callable without an inspectable signature (a C builtin) is accepted.
    """
    name = getattr(fn, "__name__", what)
    call = f"{name}({', '.join(args)})"
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise ConfigError(f"{label}: {name} is async; spikebridge calls {call} and needs its "
                          "result now: make it a plain def", key="processor")
    if inspect.isgeneratorfunction(fn):
        raise ConfigError(f"{label}: {name} is a generator (it yields); spikebridge calls "
                          f"{call} and uses what it returns", key="processor")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*args)
    except TypeError as exc:
        raise ConfigError(f"{label}: {name}{sig} cannot be called as {call} ({exc}); "
                          f"spikebridge calls {call}", key="processor") from None


def _strip(te: traceback.TracebackException) -> None:
    te.stack = traceback.StackSummary.from_list(
        [f for f in te.stack if not (f.filename or "").startswith(_OURS)]
    )
    for chained in (te.__cause__, te.__context__):
        if chained is not None:
            _strip(chained)


MAX_LINES = 60
MAX_LINE = 240


def user_traceback(exc: BaseException) -> str:
    """``exc`` formatted as Python prints it, without spikebridge's own frames (long lines
    and very deep stacks shortened, so that a binary "module" cannot flood the log)."""
    te = traceback.TracebackException.from_exception(exc)
    _strip(te)
    lines = "".join(te.format()).rstrip("\n").splitlines()
    if len(lines) > MAX_LINES:
        lines = [*lines[:10], f"  ... {len(lines) - MAX_LINES} lines left out ...",
                 *lines[-(MAX_LINES - 10):]]
    return "\n".join(ln if len(ln) <= MAX_LINE else ln[:MAX_LINE] + "..." for ln in lines)
