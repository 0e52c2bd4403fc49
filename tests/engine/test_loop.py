"""The real-time loop end to end: real UDP on 127.0.0.1, multicast on lo, in-process loop://.

Back-to-back classes (python-can style): the same relay scenarios run over every transport.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.codecs.legacy import LegacyCodec
from bridge.codecs.native import NativeCodec
from bridge.endpoints import endpoint_spec, open_endpoint
from bridge.errors import REASON_INDEX, ConfigError
from bridge.frame import SpikeFrame
from bridge.testing import RunningBridge, UdpPeer, wait_for

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


def native(ids: list[int], seq: int, source: int = 7, keys: tuple[bytes, ...] = (),
           neurons: int = 0) -> bytes:
    return NativeCodec(neurons, keys=keys).encode(
        SpikeFrame.of(ids, source=source, seq=seq, t_sent_ns=time.time_ns()))[0]


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


def books(st: Any) -> bool:
    return bool(st.frames == st.accepted + sum(st.drops))


def drain_endpoint(ep: Any, quiet: float = 0.3) -> list[bytes]:
    """Every datagram an input endpoint receives until ``quiet`` seconds pass with none."""
    out: list[bytes] = []
    last = time.monotonic()
    while time.monotonic() - last < quiet:
        got = ep.recv()
        if got is None:
            time.sleep(0.01)
            continue
        out.append(bytes(got[0]))
        last = time.monotonic()
    return out


class Transport:
    """How a test reaches a bridge's input and reads its output, for one kind of endpoint."""

    name = ""

    def input_url(self) -> str:
        raise NotImplementedError

    def output_url(self) -> str:
        raise NotImplementedError

    def send(self, rb: RunningBridge, data: bytes) -> None:
        raise NotImplementedError

    def recv_all(self) -> list[bytes]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class UdpTransport(Transport):
    name = "udp"

    def __init__(self) -> None:
        self.tx = UdpPeer()
        self.rx = UdpPeer()

    def input_url(self) -> str:
        return "udp://127.0.0.1:0"

    def output_url(self) -> str:
        return f"udp://127.0.0.1:{self.rx.port}"

    def send(self, rb: RunningBridge, data: bytes) -> None:
        self.tx.send(rb.in_port(), data)

    def recv_all(self) -> list[bytes]:
        return self.rx.recv_all()

    def close(self) -> None:
        self.tx.close()
        self.rx.close()


class McastTransport(Transport):
    name = "mcast"

    def __init__(self) -> None:
        from bridge.testing import free_udp_port

        self.in_port, self.out_port = free_udp_port(), free_udp_port()
        self.group = f"239.77.{random.randint(0, 255)}.{random.randint(1, 254)}"
        self.tx = open_endpoint(endpoint_spec(
            f"mcast://{self.group}:{self.in_port}?iface=lo&neurons=1", "out"))
        self.rx = open_endpoint(endpoint_spec(
            f"mcast://{self.group}:{self.out_port}?iface=lo&neurons=1", "in"))

    def input_url(self) -> str:
        return f"mcast://{self.group}:{self.in_port}?iface=lo"

    def output_url(self) -> str:
        return f"mcast://{self.group}:{self.out_port}?iface=lo"

    def send(self, rb: RunningBridge, data: bytes) -> None:
        assert self.tx.send(data)

    def recv_all(self) -> list[bytes]:
        return drain_endpoint(self.rx)

    def close(self) -> None:
        self.tx.close()
        self.rx.close()


class LoopTransport(Transport):
    name = "loop"

    def __init__(self) -> None:
        n = random.randint(0, 1 << 30)
        self.in_name, self.out_name = f"in{n}", f"out{n}"
        self.tx: Any = None
        self.rx: Any = None

    def input_url(self) -> str:
        return f"loop://{self.in_name}"

    def output_url(self) -> str:
        return f"loop://{self.out_name}"

    def send(self, rb: RunningBridge, data: bytes) -> None:
        if self.tx is None:
            self.tx = open_endpoint(endpoint_spec(f"loop://{self.in_name}?neurons=1", "out"))
        assert self.tx.send(data)

    def recv_all(self) -> list[bytes]:
        if self.rx is None:
            self.rx = open_endpoint(endpoint_spec(f"loop://{self.out_name}?neurons=1", "in"))
        return drain_endpoint(self.rx)


TRANSPORTS: dict[str, Callable[[], Transport]] = {
    "udp": UdpTransport, "mcast": McastTransport, "loop": LoopTransport,
}


@pytest.fixture(params=sorted(TRANSPORTS))
def transport(request: pytest.FixtureRequest) -> Any:
    t = TRANSPORTS[request.param]()
    yield t
    t.close()


class TestRelayBackToBack:
    """Relay scenarios, rerun over every transport."""

    def test_legacy_pass_through_rewrites_address(self, transport: Transport,
                                                  run_bridge: Any) -> None:
        q = "format=legacy&neurons=16"
        rb = run_bridge({"bridge": {"node": 9},
                         "input": [with_query(transport.input_url(), q)],
                         "output": [with_query(transport.output_url(), q)]})
        codec = LegacyCodec(16)
        for ids in ([1, 7], [], [15]):
            transport.send(rb, codec.encode(SpikeFrame.of(ids, source=3))[0])
        got = [codec.decode(d) for d in transport.recv_all()]
        assert [f.ids.tolist() for f in got] == [[1, 7], [], [15]]
        assert {f.source for f in got} == {9}
        st = rb.bridge.stats.inputs[0]
        assert (st.frames, st.accepted, st.spikes) == (3, 3, 3)
        assert rb.bridge.stats.outputs[0].frames == 3
        rb.stop()
        assert books(st)

    def test_garbage_flood_does_not_stop_good_frames(
            self, transport: Transport, run_bridge: Any,
            caplog: pytest.LogCaptureFixture) -> None:
        sep_in = "&" if "?" in transport.input_url() else "?"
        sep_out = "&" if "?" in transport.output_url() else "?"
        rb = run_bridge({"input": [f"{transport.input_url()}{sep_in}format=native&neurons=64"],
                         "output": [f"{transport.output_url()}{sep_out}format=native&neurons=64"]})
        rng = random.Random(1)
        good = 0
        bad = 0
        for i in range(600):
            if i % 3 == 0:
                transport.send(rb, native([i % 64], seq=good))
                good += 1
            else:
                junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 80)))
                if i % 2:
                    junk = b"SB" + junk  # right magic, wrong everything else
                transport.send(rb, junk)
                bad += 1
        out = NativeCodec(64)
        got = [out.decode(d) for d in transport.recv_all()]
        assert len(got) == good
        assert [int(f.ids[0]) for f in got] == [(3 * k) % 64 for k in range(good)]
        st = rb.bridge.stats.inputs[0]
        assert wait_for(lambda: st.frames == good + bad)
        assert st.accepted == good
        assert sum(st.drops) == bad
        assert books(st)
        # the first drop of each reason is logged with its detail, the rest only counted
        logged = [r for r in caplog.records if "dropped a frame" in r.getMessage()]
        reasons = {r for r, n in st.drops_by_reason().items() if n}
        assert len(logged) == len(reasons)


class TestFanInFanOut:
    def test_inputs_merge_at_offsets_and_outputs_take_slices(self, run_bridge: Any,
                                                              peers: Any) -> None:
        a, b, o1, o2, tx = peers(), peers(), peers(), peers(), peers()
        rb = run_bridge({
            "input": [{"url": "udp://127.0.0.1:0", "format": "legacy", "neurons": 10},
                      {"url": "udp://127.0.0.1:0", "format": "native", "neurons": 20,
                       "offset": 10}],
            "output": [{"url": f"udp://127.0.0.1:{o1.port}", "format": "native",
                        "neurons": 30},
                       {"url": f"udp://127.0.0.1:{o2.port}", "format": "legacy",
                        "neurons": 20, "offset": 10}],
        })
        tx.send(rb.in_port(0), LegacyCodec(10).encode(SpikeFrame.of([2, 9], source=1))[0])
        time.sleep(0.05)
        tx.send(rb.in_port(1), native([0, 19], seq=0, neurons=20))
        whole = [NativeCodec(30).decode(d).ids.tolist() for d in o1.recv_all()]
        part = [LegacyCodec(20).decode(d).ids.tolist() for d in o2.recv_all()]
        assert whole == [[2, 9], [10, 29]]
        assert part == [[0, 19]]  # input 0's neurons are outside this slice: nothing sent
        del a, b

    def test_python_processor_relay_mode(self, run_bridge: Any, peers: Any,
                                         tmp_path: Path) -> None:
        mod = tmp_path / "double.py"
        mod.write_text(
            "import numpy as np\n"
            "def setup(inputs, params):\n    return inputs * 2\n"
            "def step(ids):\n    return np.concatenate([ids * 2, ids * 2 + 1])\n"
        )
        tx, rx = peers(), peers()
        rb = run_bridge({"bridge": {"processor": f"python:{mod}:step"},
                         "input": ["udp://127.0.0.1:0?format=native&neurons=8"],
                         "output": [f"udp://127.0.0.1:{rx.port}?format=native&neurons=16"]})
        tx.send(rb.in_port(), native([1, 3], seq=0, neurons=8))
        got = [NativeCodec(16).decode(d).ids.tolist() for d in rx.recv_all()]
        assert got == [[2, 6, 3, 7]]


class TestAdmission:
    def test_wrong_auth_key_is_dropped_and_counted(self, run_bridge: Any, peers: Any,
                                                   tmp_path: Path) -> None:
        keyfile = tmp_path / "key"
        keyfile.write_text(KEY_A.hex() + "\n")
        os.chmod(keyfile, 0o600)
        tx, rx = peers(), peers()
        rb = run_bridge({"input": [f"udp://127.0.0.1:0?format=native&neurons=8&key={keyfile}"],
                         "output": [f"udp://127.0.0.1:{rx.port}?format=native&neurons=8"]})
        tx.send(rb.in_port(), native([1], seq=0, keys=(KEY_B,)))
        tx.send(rb.in_port(), native([2], seq=1))  # no tag at all
        tx.send(rb.in_port(), native([3], seq=2, keys=(KEY_A,)))
        got = [NativeCodec(8).decode(d).ids.tolist() for d in rx.recv_all()]
        assert got == [[3]]
        st = rb.bridge.stats.inputs[0]
        assert st.drops[REASON_INDEX["bad_auth"]] == 2
        assert st.accepted == 1 and books(st)

    def test_replayed_and_duplicate_frames_are_dropped(self, run_bridge: Any,
                                                       peers: Any) -> None:
        tx, rx = peers(), peers()
        rb = run_bridge({"input": ["udp://127.0.0.1:0?format=native&neurons=8"],
                         "output": [f"udp://127.0.0.1:{rx.port}?format=native&neurons=8"]})
        old = native([1], seq=0)
        for seq in range(1, 100):
            tx.send(rb.in_port(), native([seq % 8], seq=seq))
        tx.send(rb.in_port(), native([5], seq=99))  # duplicate
        tx.send(rb.in_port(), old)  # far behind with an older send time: a replay
        got = rx.recv_all()
        assert len(got) == 99
        st = rb.bridge.stats.inputs[0]
        assert wait_for(lambda: st.frames == 101)
        assert st.drops[REASON_INDEX["duplicate"]] == 1
        assert st.drops[REASON_INDEX["replay"]] == 1
        assert books(st)

    def test_sequence_gaps_are_counted_as_lost(self, run_bridge: Any, peers: Any) -> None:
        tx, rx = peers(), peers()
        rb = run_bridge({"input": ["udp://127.0.0.1:0?format=native&neurons=8"],
                         "output": [f"udp://127.0.0.1:{rx.port}?format=native&neurons=8"]})
        for seq in (0, 1, 5, 6, 3):
            tx.send(rb.in_port(), native([1], seq=seq))
        assert len(rx.recv_all()) == 5
        rb.stop()
        st = rb.bridge.stats.inputs[0]
        assert (st.lost, st.reordered) == (2, 1)  # 2 and 4 never came; 3 came late

    def test_allow_list_drops_other_senders(self, run_bridge: Any, peers: Any) -> None:
        tx, rx = peers(), peers()
        rb = run_bridge({"input": ["udp://127.0.0.1:0?format=native&neurons=8&allow=10.0.0.0/8"],
                         "output": [f"udp://127.0.0.1:{rx.port}?format=native&neurons=8"]})
        tx.send(rb.in_port(), native([1], seq=0))
        assert rx.recv_all() == []
        st = rb.bridge.stats.inputs[0]
        assert wait_for(lambda: st.drops[REASON_INDEX["not_allowed"]] == 1)
        assert books(st)

    def test_ids_out_of_range_are_dropped(self, run_bridge: Any, peers: Any) -> None:
        tx, rx = peers(), peers()
        rb = run_bridge({"input": ["udp://127.0.0.1:0?format=native&neurons=8"],
                         "output": [f"udp://127.0.0.1:{rx.port}?format=native&neurons=8"]})
        tx.send(rb.in_port(), native([8], seq=0))
        tx.send(rb.in_port(), native([7], seq=1))
        assert [NativeCodec(8).decode(d).ids.tolist() for d in rx.recv_all()] == [[7]]
        assert rb.bridge.stats.inputs[0].drops[REASON_INDEX["id_out_of_range"]] == 1


class TestOverload:
    def test_kernel_drops_are_counted_so_the_books_balance(self, run_bridge: Any,
                                                           peers: Any) -> None:
        tx, rx = peers(), peers()
        rb = run_bridge({"input": ["udp://127.0.0.1:0?format=legacy&neurons=100&rcvbuf=4096"],
                         "output": [f"udp://127.0.0.1:{rx.port}?format=legacy&neurons=100"]})
        frame = LegacyCodec(100).encode(SpikeFrame.of([1, 2, 3]))[0]
        # Stall the loop's thread so the tiny receive buffer overflows, then let it drain.
        rb.bridge.request_stop()
        rb.thread.join(5)
        sent = 2000
        for _ in range(sent):
            tx.send(rb.in_port(), frame)
        rb.bridge._stop = False
        rb.thread = __import__("threading").Thread(target=rb._run, daemon=True)
        rb.thread.start()
        st = rb.bridge.stats.inputs[0]
        # One more datagram after the flood: it must be relayed, and counted.
        assert wait_for(lambda: st.frames > 0, timeout=5)
        time.sleep(0.2)
        tx.send(rb.in_port(), frame)
        sent += 1
        assert wait_for(lambda: st.frames == sent, timeout=10)
        assert st.drops[REASON_INDEX["rcvbuf_overflow"]] > 0
        assert st.accepted + st.drops[REASON_INDEX["rcvbuf_overflow"]] == sent
        assert books(st)


class TestStepped:
    def test_python_step_function_sees_each_steps_merged_input(self, run_bridge: Any,
                                                               peers: Any,
                                                               tmp_path: Path) -> None:
        mod = tmp_path / "echo.py"
        mod.write_text("def step(ids):\n    return sorted(set(ids.tolist()))\n")
        tx, rx = peers(), peers()
        rb = run_bridge({"bridge": {"processor": f"python:{mod}:step", "dt_ms": 2.0},
                         "input": ["udp://127.0.0.1:0?format=native&neurons=8",
                                   "udp://127.0.0.1:0?format=legacy&neurons=4&offset=8"],
                         "output": [f"udp://127.0.0.1:{rx.port}?format=native&neurons=12"]})
        assert rb.bridge.stepped
        tx.send(rb.in_port(0), native([1, 2], seq=0, neurons=8))
        tx.send(rb.in_port(1), LegacyCodec(4).encode(SpikeFrame.of([3]))[0])
        got = [NativeCodec(12).decode(d).ids.tolist() for d in rx.recv_all()]
        assert sorted(i for ids in got for i in ids) == [1, 2, 11]
        st = rb.bridge.stats
        assert st.steps > 0
        assert st.step_lateness.count == st.steps

    def test_queue_overflow_drops_oldest_and_keeps_books(self, run_bridge: Any,
                                                          peers: Any, tmp_path: Path) -> None:
        mod = tmp_path / "slow.py"
        mod.write_text("import time\ndef step(ids):\n    time.sleep(0.05)\n    return ids\n")
        tx, rx = peers(), peers()
        rb = run_bridge({"bridge": {"processor": f"python:{mod}:step", "dt_ms": 1.0,
                                    "queue_frames": 4, "policy": "skip"},
                         "input": ["udp://127.0.0.1:0?format=native&neurons=8"],
                         "output": [f"udp://127.0.0.1:{rx.port}?format=native&neurons=8"]})
        for seq in range(200):
            tx.send(rb.in_port(), native([seq % 8], seq=seq))
        st = rb.bridge.stats.inputs[0]
        assert wait_for(lambda: st.frames == 200, timeout=10)
        # each 50 ms step overruns 1 ms deadlines: the next due step skips the missed ones
        assert wait_for(lambda: rb.bridge.stats.steps_skipped > 0, timeout=10)
        rb.stop()
        assert st.drops[REASON_INDEX["queue_full"]] > 0
        assert books(st)


class TestStartUp:
    def test_port_in_use_is_a_clear_error(self, peer: UdpPeer) -> None:
        from bridge.config import build_config
        from bridge.engine.loop import Bridge
        from bridge.errors import EndpointError

        cfg = build_config({"input": [f"udp://127.0.0.1:{peer.port}?neurons=4"]})
        with pytest.raises(EndpointError, match="Address already in use"):
            Bridge(cfg).open()

    def test_output_slice_beyond_population_is_a_config_error(self) -> None:
        from bridge.config import build_config
        from bridge.engine.loop import Bridge

        cfg = build_config({"input": ["udp://127.0.0.1:0?neurons=4"],
                            "output": ["udp://127.0.0.1:9?neurons=4&offset=2"]})
        with pytest.raises(ConfigError, match="output population has 4"):
            Bridge(cfg).open()

    def test_legacy_output_refuses_a_node_above_255(self) -> None:
        from bridge.config import build_config
        from bridge.engine.loop import Bridge

        cfg = build_config({"bridge": {"node": 300},
                            "input": ["udp://127.0.0.1:0?neurons=4"],
                            "output": ["udp://127.0.0.1:9?format=legacy&neurons=4"]})
        with pytest.raises(ConfigError, match="node 300"):
            Bridge(cfg).open()


def test_relay_of_a_large_native_frame_is_split_and_reassembled(run_bridge: Any,
                                                                peers: Any) -> None:
    tx, rx = peers(), peers()
    n = 100_000
    rb = run_bridge({"input": [f"udp://127.0.0.1:0?format=native&neurons={n}&mtu=65000"],
                     "output": [f"udp://127.0.0.1:{rx.port}?format=native&neurons={n}"]})
    ids = np.arange(0, n, 3, dtype=np.uint32)
    for d in NativeCodec(n, mtu=65000).encode(SpikeFrame(7, 0, time.time_ns(), ids)):
        tx.send(rb.in_port(), d)
    got = np.concatenate([NativeCodec(n).decode(d).ids for d in rx.recv_all()])
    assert np.array_equal(np.sort(got), ids)


class TestProcessorErrors:
    @pytest.mark.parametrize("policy", ["skip", "stop"])
    def test_a_crashing_step_function_is_counted_and_follows_the_policy(
            self, policy: str, run_bridge: Any, peers: Any, tmp_path: Path,
            caplog: pytest.LogCaptureFixture) -> None:
        mod = tmp_path / f"crash_{policy}.py"
        mod.write_text("def step(ids):\n    if 3 in ids.tolist():\n"
                       "        raise RuntimeError('boom')\n    return ids\n")
        tx, rx = peers(), peers()
        rb = run_bridge({"bridge": {"processor": f"python:{mod}:step", "on_error": policy},
                         "input": ["udp://127.0.0.1:0?format=native&neurons=8"],
                         "output": [f"udp://127.0.0.1:{rx.port}?format=native&neurons=8"]})
        tx.send(rb.in_port(), native([1], seq=0))
        tx.send(rb.in_port(), native([3], seq=1))
        tx.send(rb.in_port(), native([2], seq=2))
        got = [NativeCodec(8).decode(d).ids.tolist() for d in rx.recv_all()]
        assert rb.bridge.stats.processor_errors == 1
        assert "RuntimeError: boom" in caplog.text  # logged with its traceback
        if policy == "skip":
            assert got == [[1], [2]]
            assert rb.bridge.failure is None
        else:
            assert got == [[1]]
            assert rb.thread.join(5) is None and not rb.thread.is_alive()
            assert rb.bridge.failure is not None


def test_realtime_settings_are_applied_by_the_loop_thread_and_refusals_counted(
        run_bridge: Any) -> None:
    # Priority 99 needs CAP_SYS_NICE or RLIMIT_RTPRIO; whichever way this machine answers,
    # the flag must say what happened, and the loop must run on when it is not required.
    rb = run_bridge({"input": ["udp://127.0.0.1:0?neurons=4"],
                     "realtime": {"priority": 10, "switch_interval_us": 100}})
    assert wait_for(lambda: rb.bridge.realtime is not None)
    report = rb.bridge.realtime.report
    refused = rb.bridge.stats.realtime_refused
    assert set(refused) == {"priority", "switch_interval"}
    assert refused["priority"] == int("priority" in report.refused)
    assert refused["switch_interval"] == 0
    rb.stop()
    import sys

    assert sys.getswitchinterval() != 100e-6  # released at close


def test_reload_applies_allow_lists_and_keys_and_names_the_rest(peers: Any,
                                                                tmp_path: Path) -> None:
    from bridge.config import build_config

    tx, rx = peers(), peers()
    key = tmp_path / "key"
    key.write_text(KEY_A.hex() + "\n")
    os.chmod(key, 0o600)
    out = f"udp://127.0.0.1:{rx.port}?format=native&neurons=8"

    def doc(allow: str, neurons: int = 8, extra: str = "") -> dict[str, Any]:
        return {"bridge": {"node": 2},
                "input": [f"udp://127.0.0.1:0?format=native&neurons={neurons}&allow={allow}"
                          f"{extra}"], "output": [out]}

    pending: list[list[str]] = []
    new_cfg: list[Any] = []
    rb = RunningBridge(build_config(doc("10.0.0.0/8")),
                       on_reload=lambda: pending.append(rb.bridge.reconfigure(new_cfg[-1])))
    try:
        tx.send(rb.in_port(), native([1], seq=0))
        assert rx.recv_all() == []
        new_cfg.append(build_config(doc("127.0.0.0/8", extra=f"&key={key}")))
        rb.bridge.request_reload()
        assert wait_for(lambda: len(pending) == 1)
        assert pending[0] == []
        tx.send(rb.in_port(), native([2], seq=1))  # untagged: refused now
        tx.send(rb.in_port(), native([3], seq=2, keys=(KEY_A,)))
        assert [NativeCodec(8).decode(d).ids.tolist() for d in rx.recv_all()] == [[3]]
        new_cfg.append(build_config({**doc("127.0.0.0/8", neurons=9),
                                     "bridge": {"node": 3}}))
        rb.bridge.request_reload()
        assert wait_for(lambda: len(pending) == 2)
        assert pending[1] == ["input in0", "node"]
    finally:
        rb.stop()
