"""One deploykit run at a time per deployment: an exclusive lock on <state dir>/.lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from deploykit.errors import OperationFailed


@contextlib.contextmanager
def deployment_lock(path: Path, wait: float = 300.0, on_wait=None):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    raise OperationFailed(f"another deploykit run (pid {holder}) holds {path}; "
                                          f"gave up after {wait:.0f} s") from None
                if not told and on_wait:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    on_wait(f"waiting for another deploykit run (pid {holder}) to finish")
                    told = True
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
