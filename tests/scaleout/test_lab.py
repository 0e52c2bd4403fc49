"""Three hosts and a listener in network namespaces: sensor -> brain -> actuator, each a daemon.

The sensor node turns a local event source (legacy frames on its loopback) into native frames
multicast to 239.200.0.1 on the lab link; the brain node and a monitor node both join the
group; the brain relays to the actuator node over unicast, which records what it is told to
do. Every hop's books are read from that host's own metrics. Then the brain's cable is pulled
for 2 s: the daemons survive, the brain counts the gap from the sequence numbers, and traffic
recovers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.bench.probe import Blaster, Metrics
from bridge.codecs.legacy import LegacyCodec
from bridge.frame import SpikeFrame

pytestmark = [pytest.mark.netns, pytest.mark.integration]

N = 100
GROUP = "239.200.0.1:5000"
RATE = 1000.0  # frames/s: a sensor's nominal event-frame rate
GEN_PORT = 7000
TO_ACTUATOR = 6000


def toml(inputs: list[str], outputs: list[str], node: int) -> str:
    lines = ["[bridge]", f"node = {node}", ""]
    lines += [f'[[input]]\nurl = "{u}"\n' for u in inputs]
    lines += [f'[[output]]\nurl = "{u}"\n' for u in outputs]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def lab(lab_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("lab")
    lab = lab_factory(["sensor", "brain", "actuator", "monitor"])
    try:
        act = lab.hosts["actuator"].address
        native = f"format=native&neurons={N}"
        configs = {
            "sensor": toml([f"udp://127.0.0.1:{GEN_PORT}?format=legacy&neurons={N}&name=gen"],
                           [f"mcast://{GROUP}?iface=eth0&ttl=1&{native}&name=net"], 1),
            "brain": toml([f"mcast://{GROUP}?iface=eth0&{native}&name=sensor"],
                          [f"udp://{act}:{TO_ACTUATOR}?{native}&name=act"], 2),
            "actuator": toml([f"udp://{act}:{TO_ACTUATOR}?{native}&name=brain"],
                             [f"file:{tmp}/actuator.sbr?{native}&name=motor"], 3),
            "monitor": toml([f"mcast://{GROUP}?iface=eth0&{native}&name=sensor"],
                            [f"file:{tmp}/monitor.sbr?{native}&name=log"], 4),
        }
        for name, text in configs.items():
            path = tmp / f"{name}.toml"
            path.write_text(text)
            lab.hosts[name].start(path, tmp / f"{name}.log")
        for h in lab.hosts.values():
            h.daemon.wait_ready()
        yield lab
    finally:
        lab.close()


def frames() -> list[bytes]:
    codec = LegacyCodec(N)
    return [codec.encode(SpikeFrame.of([i, (i * 7) % N]))[0] for i in range(N)]


def scrape_all(lab: Any) -> dict[str, Metrics]:
    return {name: h.scrape() for name, h in lab.hosts.items()}


def delta(after: Metrics, before: Metrics, name: str, **labels: str) -> int:
    return int(after.get(name, 0.0, **labels) - before.get(name, 0.0, **labels))


def received(a: Metrics, b: Metrics, ep: str) -> int:
    return delta(a, b, "spikebridge_frames_received_total", endpoint=ep)


def accepted(a: Metrics, b: Metrics, ep: str) -> int:
    return delta(a, b, "spikebridge_frames_accepted_total", endpoint=ep)


def sent(a: Metrics, b: Metrics, ep: str) -> int:
    return delta(a, b, "spikebridge_frames_sent_total", endpoint=ep)


def lost(a: Metrics, b: Metrics, ep: str) -> int:
    return delta(a, b, "spikebridge_frames_lost_total", endpoint=ep)


def one_way(a: Metrics, b: Metrics, ep: str) -> tuple[int, float, float]:
    """(count, mean s, p99 bucket edge s) of the one-way latency between two scrapes."""
    name = "spikebridge_one_way_latency_seconds"
    count = delta(a, b, f"{name}_count", endpoint=ep)
    total = a.get(f"{name}_sum", endpoint=ep) - b.get(f"{name}_sum", 0.0, endpoint=ep)
    edges = sorted(
        (float(dict(lab)["le"]), v - b.get(f"{name}_bucket", 0.0, **dict(lab)))
        for lab, v in a.matching(f"{name}_bucket", endpoint=ep).items())
    p99 = next(edge for edge, c in edges if c >= 0.99 * count)
    return count, total / count if count else float("nan"), p99


def assert_books(after: dict[str, Metrics]) -> None:
    for m in after.values():
        for ep in m.inputs():
            assert m.books(ep).balanced, m.books(ep)


def test_nominal_rate_loses_nothing_and_measures_one_way_latency(lab: Any) -> None:
    before = scrape_all(lab)
    gen = Blaster("127.0.0.1", GEN_PORT, frames(), rate=RATE, seconds=2.0,
                  via=lab.hosts["sensor"].via).wait()
    time.sleep(0.5)
    after = scrape_all(lab)
    n = gen.sent
    s, b, m, a = (after[k] for k in ("sensor", "brain", "monitor", "actuator"))
    sb, bb, mb, ab = (before[k] for k in ("sensor", "brain", "monitor", "actuator"))
    assert n >= 0.9 * RATE * 2.0
    assert received(s, sb, "gen") == accepted(s, sb, "gen") == sent(s, sb, "net") == n
    for host, hb in ((b, bb), (m, mb)):  # both listeners of the group got every frame
        assert received(host, hb, "sensor") == accepted(host, hb, "sensor") == n
        assert lost(host, hb, "sensor") == 0
    assert sent(b, bb, "act") == n
    assert received(a, ab, "brain") == accepted(a, ab, "brain") == n
    assert lost(a, ab, "brain") == 0
    assert sent(a, ab, "motor") == n
    assert_books(after)
    for host, hb, hop in ((b, bb, "sensor -> brain"), (m, mb, "sensor -> monitor"),
                          (a, ab, "brain -> actuator")):
        count, mean, p99 = one_way(host, hb, {"brain -> actuator": "brain"}.get(hop, "sensor"))
        print(f"one-way latency {hop}: {count} frames, mean {mean * 1e6:.0f} us, "
              f"p99 <= {p99 * 1e3:g} ms")
        assert count == n
        assert 0 < mean < 0.05 and p99 <= 0.1


def test_a_pulled_cable_is_survived_counted_and_recovered(lab: Any) -> None:
    brain = lab.hosts["brain"]
    before = scrape_all(lab)
    gen = Blaster("127.0.0.1", GEN_PORT, frames(), rate=RATE, seconds=4.0,
                  via=lab.hosts["sensor"].via)
    try:
        time.sleep(1.0)
        brain.link(False)
        cut = time.monotonic()
        time.sleep(2.0)
    finally:
        brain.link(True)
    down = time.monotonic() - cut
    gen.wait(30)
    time.sleep(0.5)
    after = scrape_all(lab)
    assert all(h.daemon.alive() for h in lab.hosts.values())
    n = gen.sent
    b, m, a = after["brain"], after["monitor"], after["actuator"]
    bb, mb, ab = before["brain"], before["monitor"], before["actuator"]
    got = received(b, bb, "sensor")
    gap = lost(b, bb, "sensor")
    print(f"cable out {down:.2f} s: monitor {received(m, mb, 'sensor')} of {n}, brain {got}, "
          f"gap counted {gap}")
    assert received(m, mb, "sensor") == n and lost(m, mb, "sensor") == 0
    assert gap == n - got  # every frame the brain missed is counted, from the sequence numbers
    assert 0.85 * RATE * down <= gap <= 1.15 * RATE * down
    assert got >= 0.8 * (n - gap)  # before and after the cut
    assert sent(b, bb, "act") == got  # and it recovered: the rest went on to the actuator
    assert received(a, ab, "brain") == got and lost(a, ab, "brain") == 0
    assert b.get("spikebridge_endpoint_up", endpoint="sensor") == 1
    assert_books(after)
