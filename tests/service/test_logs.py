from __future__ import annotations

import io
import logging
import os
import queue
import sys

import pytest

from bridge.service.logs import DroppingQueueHandler, configure, journal_stream, sink_handler


@pytest.fixture(autouse=True)
def _restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_journal_stream_matches_the_fd_identity(tmp_path) -> None:
    with open(tmp_path / "f", "w") as fh:
        st = os.fstat(fh.fileno())
        assert journal_stream({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, fh.fileno())
        assert not journal_stream({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, fh.fileno())
        assert not journal_stream({"JOURNAL_STREAM": "garbage"}, fh.fileno())
        assert not journal_stream({}, fh.fileno())


def test_stderr_when_not_under_journald(tmp_path) -> None:
    with open(tmp_path / "log", "w+") as fh:
        setup = configure(logging.INFO, environ={}, stream=fh)
        logging.getLogger("bridge.test").info("hello %s", "world")
        logging.getLogger("bridge.test").debug("not shown")
        setup.close()
        fh.seek(0)
        lines = fh.read().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("INFO bridge.test: hello world")


def test_journal_handler_when_stderr_is_the_journal(tmp_path) -> None:
    pytest.importorskip("systemd.journal", reason="systemd-python is not installed")
    from systemd.journal import JournalHandler

    with open(tmp_path / "f", "w") as fh:
        st = os.fstat(fh.fileno())
        handler = sink_handler({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, fh)
    assert isinstance(handler, JournalHandler)


def test_priority_prefixes_without_systemd_python(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "systemd.journal", None)  # import fails
    with open(tmp_path / "f", "w+") as fh:
        st = os.fstat(fh.fileno())
        handler = sink_handler({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, fh)
        handler.handle(logging.makeLogRecord(
            {"name": "x", "levelno": logging.ERROR, "levelname": "ERROR", "msg": "bad\nthing"}))
        fh.seek(0)
        assert fh.read() == "<3>x: bad | thing\n"


def test_a_full_queue_drops_the_oldest_and_the_count_is_reported() -> None:
    q: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=2)
    handler = DroppingQueueHandler(q)
    for i in range(5):
        handler.handle(logging.makeLogRecord({"msg": f"m{i}", "levelno": logging.INFO}))
    assert handler.dropped == 3
    assert [q.get_nowait().getMessage() for _ in range(2)] == ["m3", "m4"]
    assert handler.unreported() == 3
    assert handler.unreported() == 0


def test_dropped_records_are_reported_through_the_sink() -> None:
    out = io.StringIO()
    out.fileno = lambda: -1  # type: ignore[method-assign]  # not the journal
    setup = configure(logging.INFO, environ={}, stream=out, queue_size=1)
    setup.listener.stop()  # hold the queue so that it overflows
    log = logging.getLogger("bridge.test")
    for i in range(4):
        log.warning("w%d", i)
    setup.listener.start()
    log.warning("after")
    setup.close()
    text = out.getvalue()
    assert "3 log records dropped (log queue full)" in text
    assert "w3" in text and "w0" not in text
