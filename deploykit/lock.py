"""One deploykit run at a time per deployment: an exclusive lock on <state dir>/.lock.

flock(2) on the open file: the kernel drops it when the process exits, however it exits, so a
killed run never leaves a stale lock. A run that finds the lock taken says who holds it and
waits. Within one process the lock is re-entrant (uninstall stops the deployment under the
lock it already holds).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from deploykit.errors import OperationFailed

_held: dict[str, int] = {}   # lock path -> nesting depth, for this process


def _holder(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"


@contextlib.contextmanager
def deployment_lock(path: Path, wait: float = 300.0, on_wait=None):
    key = os.path.abspath(path)
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
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
                    raise OperationFailed(f"another deploykit run (pid {_holder(fd)}) holds {path}; "
                                          f"gave up after {wait:.0f} s") from None
                if not told and on_wait:
                    on_wait(f"waiting for another deploykit run (pid {_holder(fd)}) to finish")
                    told = True
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = 1
        try:
            yield
        finally:
            _held.pop(key, None)
    finally:
        os.close(fd)
