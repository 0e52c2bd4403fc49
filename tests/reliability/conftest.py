"""Fixtures for the reliability suite: daemons run as systemd would, and what they need."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.bench.probe import ServiceProcess, free_tcp_port


@pytest.fixture
def budget() -> float:
    """The slow-test scale factor: 1.0 runs the full figures, CI sets 0.05."""
    return float(os.environ.get("SPIKEBRIDGE_SLOW_BUDGET", "1.0"))


def toml_value(value: Any) -> str:
    """A Python value as TOML (strings, numbers, booleans, lists)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def _write_config(path: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` (sections of scalars; ``input``/``output`` lists of URLs) as TOML."""
    lines: list[str] = []
    for section, body in doc.items():
        if section in ("input", "output"):
            for url in body:
                lines += [f"[[{section}]]", f"url = {toml_value(url)}", ""]
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in body.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    tomllib.loads(path.read_text())  # the helper itself must write valid TOML
    return path


def _write_keys(path: Path, *keys: bytes, mode: int = 0o600) -> Path:
    """A key file holding ``keys`` in hex (the first signs), with ``mode``."""
    path.write_text("# spikebridge auth keys\n" + "".join(k.hex() + "\n" for k in keys))
    path.chmod(mode)
    return path


@pytest.fixture
def config(tmp_path: Path) -> Callable[..., Path]:
    """``config(doc, name="bridge.toml")`` writes a TOML config into the test's directory."""
    return lambda doc, name="bridge.toml": _write_config(tmp_path / name, doc)


@pytest.fixture
def keyfile(tmp_path: Path) -> Callable[..., Path]:
    """``keyfile(*keys, mode=0o600, name="keys")`` writes an auth key file."""
    return lambda *keys, mode=0o600, name="keys": _write_keys(tmp_path / name, *keys, mode=mode)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start ``spikebridge run`` daemons with metrics on loopback; killed at teardown."""
    started: list[ServiceProcess] = []

    def start(*args: str, watchdog_usec: int = 0, metrics: bool = True,
              env: dict[str, str] | None = None) -> ServiceProcess:
        where = ("127.0.0.1", free_tcp_port()) if metrics else None
        log = tmp_path / f"daemon{len(started)}.log"
        proc = ServiceProcess(list(args), watchdog_usec=watchdog_usec, metrics=where, env=env,
                              log_path=log)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()
