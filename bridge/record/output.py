"""Where ``record`` and ``convert`` may write: the output file checks they share.

A missing directory is an error unless ``--parents`` asks for it; an existing file is an
error unless ``--force`` asks to replace it. It never creates or removes anything beyond the
one directory chain and the one file it was asked about.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--parents`` and ``--force``, the same on record and convert."""
    parser.add_argument("--parents", action="store_true",
                        help="create the output's missing directories")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing output file")


def prepare(path: str | Path, *, parents: bool, force: bool) -> str | None:
    """Make ``path`` writable as asked: None when ready, else the message naming the problem."""
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        if parent.exists():
            return f"{parent} is not a directory"
        if not parents:
            return f"directory {parent} does not exist (--parents creates it)"
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create {parent}: {exc.strerror or exc}"
    if out.exists() or out.is_symlink():
        if not force:
            return f"{out} exists (--force replaces it)"
        if out.is_dir():
            return f"{out} is a directory"
        try:
            out.unlink()
        except OSError as exc:
            return f"cannot replace {out}: {exc.strerror or exc}"
    return None
