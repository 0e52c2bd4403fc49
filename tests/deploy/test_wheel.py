"""A wheel built from this tree carries its deployment, and an installed user can write it out.

The wheel is built with pip (PEP 517, build isolation, as a user would), installed without its
dependencies into a fresh virtualenv, and that venv's own ``spikebridge`` runs ``deploy``. The
dependencies (numpy, ...) come from this test environment, appended after the new venv's own
site-packages, so that ``bridge`` itself can only come from the wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def tracked(*tops: str) -> set[str]:
    out = subprocess.run(["git", "ls-files", *tops], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                           str(out), str(REPO)], capture_output=True, text=True, timeout=300)
    if proc.returncode and "No matching distribution found for setuptools" in proc.stderr:
        pytest.skip("pip cannot fetch the build backend here (no package index)")
    assert proc.returncode == 0, proc.stderr
    (found,) = out.glob("spikebridge-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=120)
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(root / "bin/python"),
                           "install", "-q", "--no-deps", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    site = subprocess.run([str(root / "bin/python"), "-c",
                           "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies, after the venv's own packages: a plain path, so this environment's
    # own .pth files (its editable spikebridge) are not processed.
    Path(site, "zz_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    yield root


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_wheel_holds_deploy_examples_and_license_once(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        shipped = {n.removeprefix("bridge/share/") for n in names
                   if n.startswith("bridge/share/")}
        # The one source of truth: exactly the tracked files, byte for byte.
        assert shipped == tracked("deploy", "examples")
        for rel in shipped:
            assert zf.read(f"bridge/share/{rel}") == (REPO / rel).read_bytes(), rel
        licence = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        assert zf.read(licence) == (REPO / "LICENSE").read_bytes()
        assert "MIT License" in zf.read(licence).decode()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Dist: shtab" in metadata and "Requires-Dist: cobs" in metadata


def test_an_installed_user_writes_the_files_out(venv: Path, tmp_path: Path) -> None:
    where = run(venv, "python", "-c", "import bridge; print(bridge.__file__)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout   # the wheel's bridge

    out = tmp_path / "files"
    proc = run(venv, "spikebridge", "deploy", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for rel in tracked("deploy", "examples"):
        assert (out / rel).read_bytes() == (REPO / rel).read_bytes(), rel
    man = (out / "share/man/man1/spikebridge.1").read_text()
    assert man.startswith(".TH SPIKEBRIDGE") and "spikebridge deploy" in man
    bash = (out / "share/bash-completion/completions/spikebridge").read_text()
    assert "deploy" in bash and "--force" in bash

    again = run(venv, "spikebridge", "deploy", str(out), cwd=tmp_path)
    assert again.returncode == 2 and "use --force" in again.stderr
    assert run(venv, "spikebridge", "deploy", str(out), "--force", cwd=tmp_path).returncode == 0

    module = run(venv, "python", "-m", "bridge", "--version", cwd=tmp_path)
    assert module.returncode == 0 and module.stdout.startswith("spikebridge ")
    helptext = run(venv, "spikebridge", "deploy", "--help", cwd=tmp_path)
    assert helptext.returncode == 0 and "--force" in helptext.stdout
