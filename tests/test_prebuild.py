"""``spikebridge prebuild``: compiles into the configured cache; a later start compiles nothing.

Whether compilation happened is read from what the processor saw (each code object's module
was or was not already in the cache), never from how long it took.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bridge.prebuild import main
from bridge.testing import spikebridge_cmd

pytest.importorskip("brian2")
pytest.importorskip("Cython")

TINY = Path(__file__).parent / "processors" / "nets" / "tiny.py"
SUMMARY = re.compile(r"(\d+) code objects compiled, (\d+) already cached")


def write_config(path: Path, cache: Path, *, processor: str | None = None,
                 target: str = "cython") -> Path:
    path.write_text(
        "[bridge]\n"
        f'processor = "{processor or f"brian2:{TINY}"}"\n'
        "dt_ms = 1.0\n"
        "[[input]]\n"
        'url = "udp://127.0.0.1:0?format=native&neurons=16"\n'
        "[brian2]\n"
        f'cache_dir = "{cache}"\n'
        f'target = "{target}"\n'
    )
    return path


def prebuild(config: Path) -> tuple[int, int, str]:
    done = subprocess.run(spikebridge_cmd("prebuild", str(config)), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    match = SUMMARY.search(done.stdout)
    assert match, done.stdout
    return int(match[1]), int(match[2]), done.stdout


@pytest.mark.integration
def test_prebuilt_start_compiles_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    config = write_config(tmp_path / "tiny.toml", cache)
    compiled, cached, out = prebuild(config)
    assert compiled > 0 and cached == 0
    assert "compiling Brian2 code object 1" in out  # the progress callback fired meanwhile
    assert len(list(cache.glob("*.so"))) == compiled
    # A fresh process, as the daemon would be: everything comes from the cache.
    compiled2, cached2, out2 = prebuild(config)
    assert (compiled2, cached2) == (0, compiled)
    assert "compiling" not in out2


def test_not_a_brian2_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "relay.toml", tmp_path / "c", processor="relay")
    assert main([str(config)]) == 2
    assert "nothing to prebuild" in capsys.readouterr().err


def test_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.toml")]) == 2
    assert "cannot read config" in capsys.readouterr().err


def test_numpy_target_has_nothing_to_compile(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "np.toml", tmp_path / "c", target="numpy")
    assert main([str(config)]) == 0
    assert "nothing to compile" in capsys.readouterr().out


def test_broken_network_is_a_config_error(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    broken = Path(__file__).parent / "processors" / "nets" / "broken.py"
    config = write_config(tmp_path / "b.toml", tmp_path / "c",
                          processor=f"brian2:{broken}:raises", target="numpy")
    assert main([str(config)]) == 2
    assert "bug in the builder" in capsys.readouterr().err
