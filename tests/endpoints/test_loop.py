"""loop:// channels: in-process datagrams with a real descriptor, one reader per name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.endpoints import endpoint_spec, loop, open_endpoint
from bridge.errors import EndpointError


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    yield
    loop.reset()


def test_writers_reach_the_reader_in_order() -> None:
    rx = open_endpoint(endpoint_spec("loop://x?neurons=1", "in"))
    tx1 = open_endpoint(endpoint_spec("loop://x?neurons=1", "out"))
    tx2 = open_endpoint(endpoint_spec("loop://x?neurons=1", "out"))
    assert tx1.send(b"a") and tx2.send(b"b")
    got = [bytes(d) for d, _ in iter(rx.recv, None)]  # type: ignore[misc]
    assert got == [b"a", b"b"]
    assert rx.recv() is None
    assert rx.fileno() >= 0


def test_a_second_reader_is_refused() -> None:
    open_endpoint(endpoint_spec("loop://y?neurons=1", "in"))
    with pytest.raises(EndpointError, match="already has a reader"):
        open_endpoint(endpoint_spec("loop://y?neurons=1", "in"))


def test_a_full_channel_refuses_instead_of_blocking() -> None:
    open_endpoint(endpoint_spec("loop://z?neurons=1", "in"))
    tx = open_endpoint(endpoint_spec("loop://z?neurons=1", "out"))
    results = [tx.send(b"x" * 1000) for _ in range(5000)]
    assert results[0] and not all(results)
