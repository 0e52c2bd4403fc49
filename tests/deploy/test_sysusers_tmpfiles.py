"""sysusers.d and tmpfiles.d: systemd's own tools create the user and directories."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT, TEMPLATE = DEPLOY / "spikebridge.service", DEPLOY / "spikebridge@.service"
SYSUSERS = DEPLOY / "sysusers.d" / "spikebridge.conf"
TMPFILES = DEPLOY / "tmpfiles.d" / "spikebridge.conf"

needs_tools = pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
    reason="systemd-sysusers / systemd-tmpfiles are not installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="creating users and chowning in a scratch root needs root")


def settings(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def run(tool: str, root: Path, conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # With --root, a file argument is looked up inside the root: the config goes on stdin.
    return subprocess.run([tool, f"--root={root}", *args, "-"], input=conf.read_text(),
                          capture_output=True, text=True, timeout=60)


@needs_tools
@needs_root
def test_the_user_and_directories_are_created(tmp_path) -> None:
    (tmp_path / "etc").mkdir()
    proc = run("systemd-sysusers", tmp_path, SYSUSERS)
    assert proc.returncode == 0, proc.stderr
    passwd = {ln.split(":")[0]: ln.split(":") for ln in (tmp_path / "etc/passwd").read_text()
              .splitlines()}
    user = passwd["spikebridge"]
    uid, gid = int(user[2]), int(user[3])
    assert 0 < uid < 1000 and user[5] == "/var/lib/spikebridge" and user[6] == "/usr/sbin/nologin"
    groups = {ln.split(":")[0]: int(ln.split(":")[2])
              for ln in (tmp_path / "etc/group").read_text().splitlines()}
    assert groups["spikebridge"] == gid

    proc = run("systemd-tmpfiles", tmp_path, TMPFILES, "--create")
    assert proc.returncode == 0, proc.stderr
    for path, owner, mode in (("var/lib/spikebridge", uid, 0o750),
                              ("var/cache/spikebridge", uid, 0o750),
                              ("etc/spikebridge", 0, 0o755)):
        st = (tmp_path / path).stat()
        assert (st.st_uid, st.st_mode & 0o7777) == (owner, mode), path


def test_the_files_match_the_units() -> None:
    """Same user, same directories and modes as the units' StateDirectory= and CacheDirectory=."""
    lines = [ln.split() for ln in TMPFILES.read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    entries = {path: (mode, user, group) for _, path, mode, user, group, *_ in lines}
    user = next(ln.split()[1] for ln in SYSUSERS.read_text().splitlines()
                if ln.startswith("u "))
    for unit in (UNIT, TEMPLATE):
        s = settings(unit)
        assert s["User"] == [user]
        for key, base in (("StateDirectory", "/var/lib/"), ("CacheDirectory", "/var/cache/")):
            top = base + s[key][0].split("/")[0]
            mode = s[f"{key}Mode"][0]
            assert entries[top] == (mode, user, user), (unit.name, key)
    assert "/etc/spikebridge" in entries
