"""spikebridge convert: exact .sbr <-> .npz, CSV round trips, Brian2 (indices, times) arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bridge.record.convert import (
    brian2_arrays,
    main,
    read_any,
    seconds_to_ns,
    write_spikes,
)
from bridge.record.sbrfile import SbrReader, load_table

COLUMNS = ("t_ns", "source", "seq", "ids")


def same_spikes(a: Path, b: Path) -> bool:
    """Same spikes, times, sources, seqs and endpoint names (indexes may be numbered anew)."""
    x, y = load_table([a]), load_table([b])
    names_x = np.array([e.name for e in x.header.endpoints])[x.endpoint]
    names_y = np.array([e.name for e in y.header.endpoints])[y.endpoint]
    return np.array_equal(names_x, names_y) and all(
        np.array_equal(getattr(x, k), getattr(y, k)) for k in COLUMNS
    )


def test_sbr_npz_sbr_is_exact(sample_sbr: Path, tmp_path: Path) -> None:
    npz, back = tmp_path / "s.npz", tmp_path / "back.sbr"
    assert main([str(sample_sbr), str(npz)]) == 0
    assert main([str(npz), str(back)]) == 0
    assert same_spikes(sample_sbr, back)
    assert SbrReader(back).header.endpoints == SbrReader(sample_sbr).header.endpoints


def test_npz_holds_brian2_arrays(sample_sbr: Path, tmp_path: Path) -> None:
    npz = tmp_path / "s.npz"
    assert main([str(sample_sbr), str(npz)]) == 0
    table = load_table([sample_sbr])
    with np.load(npz) as data:
        offsets = np.array([0, 200, 0])[table.endpoint]
        assert np.array_equal(data["indices"], table.ids + offsets)
        assert np.allclose(data["times"], table.t_ns / 1e9, rtol=0, atol=1e-12)
        assert list(data["endpoint_names"]) == ["in0", "in1", "out0"]


def test_local_ids(sample_sbr: Path, tmp_path: Path) -> None:
    npz = tmp_path / "s.npz"
    assert main([str(sample_sbr), str(npz), "--local-ids"]) == 0
    with np.load(npz) as data:
        assert np.array_equal(data["indices"], load_table([sample_sbr]).ids)


def test_csv_round_trip_keeps_times_ids_and_order(sample_sbr: Path, tmp_path: Path) -> None:
    csv, back = tmp_path / "s.csv", tmp_path / "back.sbr"
    assert main([str(sample_sbr), str(csv)]) == 0
    lines = csv.read_text().splitlines()
    assert lines[0] == "time_s,endpoint,source,seq,neuron"
    assert main([str(csv), str(back)]) == 0
    assert same_spikes(sample_sbr, back)
    assert sorted(e.name for e in SbrReader(back).header.endpoints) == ["in0", "in1", "out0"]


def test_brian2_style_csv_without_optional_columns(tmp_path: Path) -> None:
    csv = tmp_path / "b.csv"
    csv.write_text("time_s,neuron\n0.001,3\n0.001,5\n0.0025,3\n")
    table = read_any(csv, name="stim", neurons=10, source=4)
    assert table.frames == 2
    assert table.t_ns.tolist() == [1_000_000, 1_000_000, 2_500_000]
    assert table.header.endpoints[0].name == "stim"
    assert table.header.endpoints[0].neurons == 10
    assert table.source.tolist() == [4, 4, 4]


def test_spike_monitor_arrays_become_one_frame_per_time(tmp_path: Path) -> None:
    out = tmp_path / "mon.sbr"
    indices = np.array([4, 1, 2, 9])
    times = np.array([0.002, 0.001, 0.001, 0.0035])  # unsorted, as a merge might give
    write_spikes(out, indices, times, neurons=10)
    frames = list(SbrReader(out).spikes())
    assert [(r.t_ns, r.frame.ids.tolist(), r.frame.seq) for r in frames] == [
        (1_000_000, [1, 2], 0), (2_000_000, [4], 1), (3_500_000, [9], 2)
    ]
    got_i, got_t = brian2_arrays(out)
    order = np.argsort(times, kind="stable")
    assert got_i.tolist() == indices[order].tolist()
    assert np.allclose(got_t, times[order])


def test_dt_option(tmp_path: Path) -> None:
    src = tmp_path / "in.npz"
    np.savez(src, indices=np.array([1, 1, 2, 1]), times=np.array([0.0101, 0.0104, 0.0104, 0.02]))
    out = tmp_path / "out.npz"
    assert main([str(src), str(out), "--dt", "1"]) == 0
    with np.load(out) as data:
        assert data["indices"].tolist() == [1, 2, 1]
        assert np.allclose(data["times"], [0.010, 0.010, 0.020])


@pytest.mark.parametrize("text,ns", [("1.5", 1_500_000_000), ("0.000000001", 1),
                                     ("-2.25", -2_250_000_000), ("3", 3_000_000_000),
                                     ("1e-3", 1_000_000), (".5", 500_000_000),
                                     ("0.0000000015", 2)])
def test_seconds_parse_exactly(text: str, ns: int) -> None:
    assert seconds_to_ns(text) == ns


def test_bad_input_is_reported(tmp_path: Path, sample_sbr: Path) -> None:
    # a bad input file is bad usage: exit 2 (docs/cli.md)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("time_s,neuron\n0.1,x\n")
    assert main([str(bad_csv), str(tmp_path / "o.sbr")]) == 2
    no_col = tmp_path / "nocol.csv"
    no_col.write_text("t,id\n0.1,1\n")
    assert main([str(no_col), str(tmp_path / "o.sbr")]) == 2
    npz = tmp_path / "x.npz"
    np.savez(npz, foo=np.arange(3))
    assert main([str(npz), str(tmp_path / "o.sbr")]) == 2
    neg = tmp_path / "neg.npz"
    np.savez(neg, indices=np.array([-1]), times=np.array([0.0]))
    assert main([str(neg), str(tmp_path / "o.sbr")]) == 2
    assert not (tmp_path / "o.sbr").exists()


def test_bad_arguments_exit_2(tmp_path: Path, sample_sbr: Path) -> None:
    assert main([str(sample_sbr), str(tmp_path / "x.txt")]) == 2
    assert main([str(sample_sbr), str(sample_sbr)]) == 2  # never overwrites
    assert main([str(sample_sbr), str(tmp_path / "x.csv"), "--dt", "1"]) == 2
