"""A pseudo-terminal that stands in for a USB serial device, with unplug and replug.

The host opens ``path`` (or the stable ``link`` symlink, like /dev/serial/by-id/...). An
unplug closes the pty so the host's reads fail, and removes the link as udev would; a replug
links a different pty, so the device comes back under a new name behind the same link.
Never paces, mangles or interprets bytes: the emulator does that.
"""

from __future__ import annotations

import contextlib
import os
import tty
from pathlib import Path


class PtyPort:
    """The device side (master) of a pty, plus the symlink the host is told to open."""

    def __init__(self, link: str | os.PathLike[str] | None = None) -> None:
        self.link = Path(link) if link is not None else None
        self.master = -1
        self._slave = -1
        self.path = ""
        self._spare: tuple[int, int] | None = None
        self.plugged = False
        self.names: list[str] = []  # every pty name this device has had, oldest first

    @staticmethod
    def _new_pty() -> tuple[int, int]:
        master, slave = os.openpty()
        # Raw from the start: bytes the device sends before the host configures the port
        # must not be echoed back or have CR/LF rewritten by the line discipline.
        tty.setraw(slave)
        os.set_blocking(master, False)
        return master, slave

    def plug(self) -> str:
        """Make the device appear (a fresh pty, a new name after an unplug); return its path."""
        if self.plugged:
            return self.path
        self.master, self._slave = self._spare if self._spare is not None else self._new_pty()
        self._spare = None
        # The emulator keeps the slave open too: without it the master reads EIO whenever
        # the host has the port closed, and the pty would vanish between host reopens.
        self.path = os.ttyname(self._slave)
        self.names.append(self.path)
        if self.link is not None:
            tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.path)
            tmp.replace(self.link)  # atomic: the host never sees a missing or half link
        self.plugged = True
        return self.path

    def unplug(self) -> None:
        """Make the device vanish: the host's descriptor hangs up and the link goes away."""
        if not self.plugged:
            return
        # Take the next pty now, while this one still holds its number, so the device
        # reappears under a different name, as a re-enumerated USB device does.
        self._spare = self._new_pty()
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                if self.link.is_symlink() and os.readlink(self.link) == self.path:
                    self.link.unlink()
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.master = self._slave = -1
        self.plugged = False

    def close(self) -> None:
        """Unplug for good and release the spare pty."""
        self.unplug()
        if self._spare is not None:
            for fd in self._spare:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._spare = None

    def read(self, n: int = 65536) -> bytes:
        """What the host wrote (b"" when nothing is pending or the device is unplugged)."""
        if not self.plugged:
            return b""
        try:
            return os.read(self.master, n)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            return b""  # EIO: no host side open right now

    def write(self, data: bytes | memoryview) -> int:
        """Bytes the pty accepted now (0 when its buffer is full or unplugged)."""
        if not self.plugged or not data:
            return 0
        try:
            return os.write(self.master, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            return 0
