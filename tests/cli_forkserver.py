"""A fork server for tests/test_cli_fuzz.py: runs ``spikebridge`` command lines fast.

It imports the command modules once, then for each request (one JSON line on stdin:
``{"args": [...], "cwd": DIR, "limit": SECONDS}``) forks a child in its own session that runs
``bridge.cli.main(args)`` exactly as the console script would: an exception that escapes is
printed as Python prints it (a traceback on stderr) and exits 1. A child still running after
``limit`` seconds gets SIGTERM (then SIGKILL after 10 s). The reply is one JSON line:
``{"code": N, "stopped": bool, "stderr": TEXT}``, ``code`` negative for a signal.

It never runs anything but ``bridge.cli.main``, and only with the arguments it is sent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
import traceback

import bridge.cli

for _module in ("bridge.service.daemon", "bridge.tools.check", "bridge.tools.send",
                "bridge.tools.listen", "bridge.tools.demo", "bridge.record.recorder_cli",
                "bridge.record.player_cli", "bridge.record.plot", "bridge.record.convert",
                "bridge.record.top", "bridge.emulate.cli", "bridge.prebuild", "bridge.bench"):
    __import__(_module)


def child(args: list[str], cwd: str, err_fd: int) -> None:
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(err_fd, 2)
    os.chdir(cwd)
    code: int = 1
    try:
        got = bridge.cli.main(args)
        code = int(got) if isinstance(got, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code & 0xFF)


def serve_one(request: dict[str, object]) -> dict[str, object]:
    args = [str(a) for a in request["args"]]  # type: ignore[attr-defined]
    limit = float(request["limit"])  # type: ignore[arg-type]
    with tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            child(args, str(request["cwd"]), err.fileno())
        stopped = False
        deadline = time.monotonic() + limit
        status = None
        while status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
            now = time.monotonic()
            if now >= deadline:
                if not stopped:
                    stopped = True
                    _signal_group(pid, signal.SIGTERM)
                    deadline = now + 10
                else:
                    _signal_group(pid, signal.SIGKILL)
                    deadline = now + 60
            time.sleep(0.01)
        _signal_group(pid, signal.SIGKILL)  # anything it left behind in its session
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    code = os.waitstatus_to_exitcode(status)
    return {"code": code, "stopped": stopped, "stderr": text}


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(serve_one(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
