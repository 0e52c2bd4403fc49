"""``spikebridge deploy DIR`` writes deploy/ and examples/ and refuses to clobber."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bridge.tools.deploy import generated_files, main, shared_files

REPO = Path(__file__).resolve().parents[2]
INSTALLED_PATH = r"\b((?:deploy|share)/[\w@./-]+\.(?:service|conf|toml|rules|yml|json|1))"


def tracked(top: str) -> set[str]:
    out = subprocess.run(["git", "ls-files", top], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


def test_every_tracked_deploy_and_example_file_is_shipped() -> None:
    shipped = {rel for rel, _ in shared_files()}
    assert shipped >= tracked("deploy") | tracked("examples")
    for rel in ("deploy/spikebridge@.service", "deploy/sysusers.d/spikebridge.conf",
                "deploy/tmpfiles.d/spikebridge.conf", "deploy/grafana/spikebridge.json",
                "deploy/prometheus/spikebridge-rules.yml", "examples/reflex.py"):
        assert rel in shipped, rel


def test_writes_everything_and_refuses_to_overwrite(tmp_path: Path, capsys) -> None:
    out = tmp_path / "files"
    assert main([str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    for rel, node in shared_files():
        assert (out / rel).read_bytes() == node.read_bytes(), rel
    assert (out / "share/man/man1/spikebridge.1").read_text().startswith(".TH SPIKEBRIDGE")
    assert "_shtab_spikebridge" in (out / "share/bash-completion/completions/spikebridge"
                                    ).read_text()
    assert (out / "share/zsh/site-functions/_spikebridge").read_text().startswith("#compdef")

    unit = out / "deploy/spikebridge.service"
    unit.write_text("edited by the operator")
    assert main([str(out)]) == 2
    err = capsys.readouterr().err
    assert "exist; use --force to overwrite" in err and str(out / "deploy") in err
    assert unit.read_text() == "edited by the operator"   # nothing was written

    assert main([str(out), "--force"]) == 0
    assert unit.read_bytes() == (REPO / "deploy/spikebridge.service").read_bytes()


def test_force_replaces_a_link_not_its_target(tmp_path: Path) -> None:
    out = tmp_path / "files"
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (out / "deploy").mkdir(parents=True)
    (out / "deploy/spikebridge.service").symlink_to(victim)
    assert main([str(out)]) == 2
    assert main([str(out), "--force"]) == 0
    assert victim.read_text() == "keep me"
    assert not (out / "deploy/spikebridge.service").is_symlink()


def test_list_writes_nothing(tmp_path: Path, capsys) -> None:
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert "deploy/spikebridge@.service" in listed and "share/man/man1/spikebridge.1" in listed
    assert not list(tmp_path.iterdir())


def test_bad_arguments_exit_2(tmp_path: Path, capsys) -> None:
    assert main([]) == 2
    assert "give the directory" in capsys.readouterr().err
    afile = tmp_path / "plain"
    afile.write_text("")
    assert main([str(afile)]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_the_files_docs_operations_installs_are_the_ones_written() -> None:
    """Every deploy/... or share/... path the install steps name is one deploy writes."""
    text = (REPO / "docs/operations.md").read_text()
    named = set(re.findall(INSTALLED_PATH, text))
    written = {rel for rel, _ in shared_files()} | {rel for rel, _ in generated_files()}
    assert named and named <= written, named - written
