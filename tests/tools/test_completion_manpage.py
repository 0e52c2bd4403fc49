"""The man page and the bash/zsh completions name every command and option, and load."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.tools import completion, manpage
from bridge.tools.parsers import command_tree, walk

BASH = shutil.which("bash")
ZSH = shutil.which("zsh")
MAN = shutil.which("man")


def options(parser: argparse.ArgumentParser, help: bool = True) -> list[str]:
    """The options a user is shown (hidden deprecated spellings are not)."""
    return [o for a in parser._actions for o in a.option_strings
            if (help or not isinstance(a, argparse._HelpAction)) and a.help != argparse.SUPPRESS]


def subcommands(parser: argparse.ArgumentParser) -> list[str]:
    return [name for a in parser._actions if isinstance(a, argparse._SubParsersAction)
            for name in a.choices]


TREE = list(walk(command_tree()))


@pytest.fixture(scope="module")
def page() -> str:
    return manpage.page()


@pytest.fixture(scope="module", params=completion.SHELLS)
def script(request) -> tuple[str, str]:
    return request.param, completion.script(request.param)


def test_the_page_names_every_command_and_option(page: str) -> None:
    for prog, parser in TREE:
        assert prog.replace("-", "\\-") in page, prog
        for opt in options(parser, help=False):  # every page says -h once, not per command
            assert f"\\fB{opt.replace('-', chr(92) + '-')}\\fR" in page, f"{prog} {opt}"
    for section in ("NAME", "SYNOPSIS", "EXIT STATUS", "FILES", "SIGNALS", "EXAMPLES",
                    "SEE ALSO"):
        assert f"\n.SH {section}\n" in page, section


@pytest.mark.skipif(MAN is None, reason="man is not installed (Debian man-db)")
def test_the_page_renders_without_warnings(page: str, tmp_path: Path) -> None:
    path = tmp_path / "spikebridge.1"
    path.write_text(page)
    proc = subprocess.run([str(MAN), "--warnings", "-l", str(path)], capture_output=True,
                          text=True, timeout=60, env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    assert "spikebridge bench serial" in proc.stdout and "--codecs-only" in proc.stdout


def test_the_scripts_name_every_command_and_option(script: tuple[str, str]) -> None:
    _, text = script
    for _, parser in TREE:
        for word in (*options(parser), *subcommands(parser)):
            assert word in text, word


def test_the_scripts_parse(script: tuple[str, str], tmp_path: Path) -> None:
    shell, text = script
    exe = {"bash": BASH, "zsh": ZSH}[shell]
    if exe is None:
        pytest.skip(f"{shell} is not installed")
    path = tmp_path / f"completion.{shell}"
    path.write_text(text)
    proc = subprocess.run([exe, "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr


QUERY = r"""
source "$1"
shift
ask() {  # the words typed so far; the last one is being completed
  COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
  COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
  _shtab_spikebridge spikebridge "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"
  printf '%s\n' "${COMPREPLY[@]}"
}
while IFS= read -r line; do
  read -r -a words <<< "$line"
  [[ $line == *" " ]] && words+=("")
  echo "== $line"
  ask "${words[@]}"
done
"""


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_bash_completes_commands_and_options(tmp_path: Path) -> None:
    """Real completion queries in bash, for every command: the words it offers."""
    path = tmp_path / "spikebridge.bash"
    path.write_text(completion.script("bash"))
    (tmp_path / "query.sh").write_text(QUERY)
    queries = ["spikebridge ", "spikebridge bench "]
    queries += [f"{prog} --" for prog, parser in TREE if options(parser)]
    queries += ["spikebridge completion ", "spikebridge emulate "]
    proc = subprocess.run([BASH, str(tmp_path / "query.sh"), str(path)],
                          input="\n".join(queries) + "\n", capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    answers: dict[str, list[str]] = {}
    for block in proc.stdout.split("== ")[1:]:
        query, *words = block.rstrip("\n").split("\n")
        answers[query] = words
    parsers = dict(TREE)
    assert answers["spikebridge "] == subcommands(parsers["spikebridge"])
    assert answers["spikebridge bench "] == subcommands(parsers["spikebridge bench"])
    for prog, parser in TREE:
        if options(parser):
            want = {o for o in options(parser) if o.startswith("--")}
            assert set(answers[f"{prog} --"]) == want, prog
    assert answers["spikebridge completion "] == ["bash", "zsh"]
    assert answers["spikebridge emulate "] == ["edvs", "board"]


def test_file_arguments_complete_files() -> None:
    text = completion.script("bash")
    assert "_shtab_compgen_files" in text and "_shtab_compgen_dirs" in text
