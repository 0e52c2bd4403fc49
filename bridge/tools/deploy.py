"""``spikebridge deploy DIR``: write the deployment files an installed user needs into DIR.

The files are the repository's ``deploy/`` and ``examples/`` directories (systemd units,
sysusers.d and tmpfiles.d files, the udev rule, the Prometheus scrape config and alert rules,
the Grafana dashboard, example configs and networks). A wheel carries them as package data
under ``bridge/share/`` (setup.py puts them there at build time, so the repository holds one
copy); a source checkout reads them in place. The man page and the shell completions are
generated on the spot from the installed commands.

It must never overwrite a file without ``--force``, and never write outside DIR.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Iterator, Sequence
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from bridge.tools import ArgumentParser, error

PROG = "spikebridge deploy"
SHARED = ("deploy", "examples")
SKIP_NAMES = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache"})


def share_root() -> Traversable:
    """Where ``deploy/`` and ``examples/`` are: the wheel's package data or the checkout."""
    packaged = resources.files("bridge") / "share"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "deploy").is_dir():
        return checkout
    raise FileNotFoundError(
        "this installation of spikebridge carries no deployment files (bridge/share is missing)")


def _walk(node: Traversable, rel: str) -> Iterator[tuple[str, Traversable]]:
    for child in sorted(node.iterdir(), key=lambda t: t.name):
        if child.name in SKIP_NAMES or child.name.startswith(".") or child.name.endswith(".pyc"):
            continue
        path = f"{rel}/{child.name}"
        if child.is_dir():
            yield from _walk(child, path)
        else:
            yield path, child


def shared_files() -> list[tuple[str, Traversable]]:
    """``(relative path, file)`` for every shipped file, e.g. ``deploy/spikebridge.service``."""
    root = share_root()
    out: list[tuple[str, Traversable]] = []
    for top in SHARED:
        node = root / top
        if node.is_dir():
            out.extend(_walk(node, top))
    return out


def generated_files() -> list[tuple[str, str]]:
    """``(relative path, text)`` for the man page and the bash and zsh completions."""
    from bridge.tools import completion, manpage

    return [(manpage.INSTALL, manpage.page()),
            *((completion.INSTALL[shell], completion.script(shell)) for shell in completion.SHELLS)]


def build_parser() -> ArgumentParser:
    """The command's argument parser (for main, the man page and shell completion)."""
    parser = ArgumentParser(
        prog=PROG,
        description=textwrap.fill(
            "Write spikebridge's deployment files into DIR: the systemd units "
            "(spikebridge.service, spikebridge@.service), sysusers.d and tmpfiles.d "
            "files, the udev rule, the Prometheus scrape config and alert rules, the "
            "Grafana dashboard, example configs and networks (under DIR/deploy and "
            "DIR/examples, as in the source repository), and the man page and bash and "
            "zsh completions (under DIR/share, as under an install prefix). An existing "
            "file is an error unless --force is given.", 79),
        epilog="examples:\n"
               "  spikebridge deploy ./spikebridge-files\n"
               "  cd spikebridge-files && install -m 0644 deploy/spikebridge@.service "
               "/etc/systemd/system/\n"
               "  spikebridge deploy --list\n"
               "The install steps: man spikebridge (FILES), and docs/operations.md in the\n"
               "source repository.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", nargs="?", metavar="DIR",
                        help="directory to write into (created if missing)")
    parser.add_argument("--force", action="store_true", help="overwrite files that exist")
    parser.add_argument("--list", action="store_true",
                        help="print the relative paths that would be written, write nothing")
    return parser


def main(argv: Sequence[str]) -> int:
    """Write the files; exit 0, or 2 for bad arguments or files in the way."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        shared = shared_files()
    except FileNotFoundError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    if args.list:
        for rel in [*(r for r, _ in shared), *(r for r, _ in generated_files())]:
            print(rel)
        return 0
    if args.dir is None:
        return error(PROG, "give the directory to write into (or --list)")
    out = Path(args.dir)
    if out.exists() and not out.is_dir():
        return error(PROG, f"{out} exists and is not a directory")
    generated = generated_files()
    targets = [out / rel for rel, _ in shared] + [out / rel for rel, _ in generated]
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not args.force:
        shown = ", ".join(str(t) for t in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        return error(PROG, f"{shown}{more} exist; use --force to overwrite")
    try:
        for rel, node in shared:
            _write(out / rel, node.read_bytes())
        for rel, text in generated:
            _write(out / rel, text.encode())
    except OSError as exc:
        return error(PROG, f"cannot write into {out}: {exc}")
    if not args.quiet:
        print(f"wrote {len(targets)} files into {out}: deploy/ (units, sysusers.d, tmpfiles.d, "
              f"udev, prometheus, grafana, config), examples/, share/ (man page, completions)")
    return 0


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()  # --force replaces a link itself, never the file it points to
    path.write_bytes(data)
    path.chmod(0o644)
