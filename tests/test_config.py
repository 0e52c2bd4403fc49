"""Config validation: every error names the key path and the value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.config import build_config, config_from_flags, load_config
from bridge.errors import ConfigError

GOOD = """
[bridge]
node = 3
processor = "relay"

[[input]]
url = "udp://127.0.0.1:50001"
format = "legacy"
neurons = 100

[[input]]
url = "udp://127.0.0.1:50002?format=native&neurons=50&offset=100&allow=127.0.0.0/8"

[[output]]
url = "udp://127.0.0.1:50003?format=native&neurons=150"
name = "brain"

[metrics]
listen = "127.0.0.1:9108"
"""


def test_a_good_config(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    cfg = load_config(str(path))
    assert cfg.node == 3 and cfg.mode == "relay"
    assert [s.name for s in cfg.inputs] == ["in0", "in1"]
    assert cfg.inputs[0].format == "legacy" and cfg.inputs[0].neurons == 100
    assert cfg.inputs[1].offset == 100 and str(cfg.inputs[1].allow[0]) == "127.0.0.0/8"
    assert cfg.outputs[0].name == "brain"
    assert cfg.metrics.listen == ("127.0.0.1", 9108)


@pytest.mark.parametrize(("doc", "key", "words"), [
    ({"bridge": {"nod": 1}}, "bridge.nod", "unknown key"),
    ({"bridge": {"node": "one"}}, "bridge.node", "expected int"),
    ({"bridge": {"dt_ms": -1}}, "bridge.dt_ms", "> 0"),
    ({"bridge": {"processor": "perl:x"}}, "bridge.processor", "unknown processor"),
    ({"bridge": {"policy": "hurry"}}, "bridge.policy", "catch-up"),
    ({"bridge": {"repetitions": 3}}, "bridge.repetitions", "finite"),
    ({"inputs": []}, "inputs", "unknown section"),
    ({"metrics": {"listen": "nowhere"}}, "metrics.listen", "HOST:PORT"),
])
def test_bad_keys_are_named(doc: dict[str, object], key: str, words: str) -> None:
    doc = {"input": ["udp://127.0.0.1:1?neurons=4"], **doc}
    with pytest.raises(ConfigError) as err:
        build_config(doc)
    assert key in str(err.value)
    assert words in str(err.value)


@pytest.mark.parametrize(("url", "words"), [
    ("udp://127.0.0.1:1?neurons=4&colour=red", "unknown key(s) colour"),
    ("udp://127.0.0.1:1?neurons=4&format=morse", "unknown format 'morse'"),
    ("udp://127.0.0.1:1?neurons=four", "neurons"),
    ("udp://127.0.0.1:1", "neurons=N"),
    ("udp://127.0.0.1?neurons=4", "HOST:PORT"),
    ("tcp://127.0.0.1:1?neurons=4", "scheme must be one of"),
    ("udp://127.0.0.1:1?neurons=4&allow=not-a-net", "CIDR"),
    ("udp://127.0.0.1:1?neurons=4&format=legacy&mtu=9000", "unknown key(s) mtu"),
])
def test_bad_urls_are_named_and_quote_the_grammar(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"input": [url]})
    assert words in str(err.value)


def test_unknown_url_key_quotes_the_grammar() -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"input": ["udp://127.0.0.1:1?neurons=4&colour=red"]})
    assert "udp://HOST:PORT" in str(err.value) and "rcvbuf" in str(err.value)


def test_key_file_must_be_private(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("00" * 32 + "\n")
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        build_config({"input": [f"udp://127.0.0.1:1?neurons=4&key={key}"]})
    os.chmod(key, 0o600)
    cfg = build_config({"input": [f"udp://127.0.0.1:1?neurons=4&key={key}"]})
    assert cfg.inputs[0].keys == (bytes(32),)


def test_short_key_and_empty_key_file_are_refused(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("# comment only\n")
    os.chmod(key, 0o600)
    with pytest.raises(ConfigError, match="no key"):
        build_config({"input": [f"udp://127.0.0.1:1?neurons=4&key={key}"]})
    key.write_text("abcd\n")
    with pytest.raises(ConfigError, match="at least 16"):
        build_config({"input": [f"udp://127.0.0.1:1?neurons=4&key={key}"]})


def test_duplicate_endpoint_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="unique"):
        build_config({"input": ["udp://127.0.0.1:1?neurons=4&name=a",
                                "udp://127.0.0.1:2?neurons=4&name=a"]})


def test_flags_make_the_same_config() -> None:
    cfg = config_from_flags(["udp://127.0.0.1:1?neurons=4"], ["udp://127.0.0.1:2?neurons=4"],
                            dt_ms=0.5, duration_s=2, node=7)
    assert cfg.mode == "stepped" and cfg.dt_ns == 500_000 and cfg.duration_ns == 2 * 10**9
    assert cfg.node == 7


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[bridge\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.toml"))


@pytest.mark.parametrize(("text", "want"), [("9108", ("127.0.0.1", 9108)),
                                            (":9108", ("127.0.0.1", 9108)),
                                            ("0.0.0.0:9", ("0.0.0.0", 9))])
def test_metrics_listen_defaults_to_loopback(text: str, want: tuple[str, int]) -> None:
    from bridge.config import parse_listen

    assert parse_listen(text) == want


def test_processor_files_resolve_against_the_config_directory(tmp_path: Path) -> None:
    sub = tmp_path / "lab"
    sub.mkdir()
    (sub / "c.toml").write_text('[bridge]\nprocessor = "python:nets/f.py:step"\n'
                                '[[input]]\nurl = "udp://127.0.0.1:1?neurons=4"\n')
    cfg = load_config(str(sub / "c.toml"))
    assert cfg.processor == f"python:{sub}/nets/f.py:step"
    (sub / "d.toml").write_text('[bridge]\nprocessor = "brian2:net.py:build"\n'
                                '[[input]]\nurl = "udp://127.0.0.1:1?neurons=4"\n')
    assert load_config(str(sub / "d.toml")).processor == f"brian2:{sub}/net.py:build"
    (sub / "e.toml").write_text('[bridge]\nprocessor = "python:mypkg.mod:step"\n'
                                '[[input]]\nurl = "udp://127.0.0.1:1?neurons=4"\n')
    assert load_config(str(sub / "e.toml")).processor == "python:mypkg.mod:step"
