"""Build step that puts the repository's deploy/ and examples/ into the wheel as bridge/share/.

The repository keeps one copy of those files, where its docs and tests use them; the wheel
carries them as package data so that ``spikebridge deploy DIR`` can write them out for an
installed user. Everything else about the build is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHARED = ("deploy", "examples")
SKIP = {"__pycache__", ".pytest_cache", ".mypy_cache"}


class BuildPyWithShare(build_py):
    """build_py, then copy SHARED into ``bridge/share/`` of the build (not for editable installs,
    where bridge.tools.deploy reads the checkout in place)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        here = Path(__file__).resolve().parent
        share = Path(self.build_lib, "bridge", "share")
        shutil.rmtree(share, ignore_errors=True)  # no stale file from an earlier build
        for top in SHARED:
            for src in sorted((here / top).rglob("*")):
                rel = src.relative_to(here)
                if not src.is_file() or SKIP & set(rel.parts) or src.suffix == ".pyc" or any(
                        part.startswith(".") for part in rel.parts):
                    continue
                dst = share / rel
                self.mkpath(str(dst.parent))
                self.copy_file(str(src), str(dst), preserve_mode=False)


setup(cmdclass={"build_py": BuildPyWithShare})
