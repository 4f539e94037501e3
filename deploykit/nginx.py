"""The nginx adapter: test, start, reload, stop, and what is running.

Local target: nginx runs with its own prefix and main config under the state dir
(`nginx -p PREFIX -c CONF -e ERRORLOG`). System target: the distribution's nginx and config.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from deploykit.errors import OperationFailed
from deploykit.paths import Paths


class NginxError(OperationFailed):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _stopped_accepting(pid: int) -> bool:
    """An old worker gone, or closing its listening sockets (nginx retitles it first)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"shutting down" in f.read() or not _pid_alive(pid)
    except OSError:
        return True


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class Nginx:
    def __init__(self, paths: Paths, binary: str = "nginx"):
        self.paths = paths
        self.binary = binary or "nginx"

    @property
    def error_log(self) -> Path:
        """Where nginx says why it failed: the deployment's own log, or the distribution's."""
        if self.paths.target == "local":
            return self.paths.log("nginx-error")
        return self.paths.root / "var/log/nginx/error.log"

    def argv(self, *extra: str) -> list[str]:
        p = self.paths
        if p.target == "local":
            return [self.binary, "-p", f"{p.nginx_prefix}/", "-c", str(p.nginx_main_conf),
                    "-e", str(p.log("nginx-error")), *extra]
        if p.root != Path("/"):
            # -e: nginx logs to its built-in /var/log/nginx/error.log before it reads the config.
            return [self.binary, "-p", f"{p.nginx_prefix}/", "-c", str(p.nginx_main_conf),
                    "-e", str(self.error_log), *extra]
        return [self.binary, *extra]

    def _run(self, *extra: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*extra), capture_output=True, text=True, timeout=timeout)

    def probe_config(self) -> tuple[bool, str]:
        """nginx -t: whether the configuration on disk is valid, and what nginx said."""
        if self.paths.target == "local":
            self.paths.nginx_temp.mkdir(parents=True, exist_ok=True)
        res = self._run("-t", "-q")
        return res.returncode == 0, (res.stderr or res.stdout).strip()

    def probe_pid(self) -> int | None:
        try:
            pid = int(self.paths.nginx_pid.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def probe_workers(self) -> list[int]:
        pid = self.probe_pid()
        return sorted(_children(pid)) if pid else []

    def apply_start(self, timeout: float = 10) -> int:
        if self.paths.target == "local":
            self.paths.nginx_temp.mkdir(parents=True, exist_ok=True)
        res = self._run()
        if res.returncode != 0:
            raise NginxError(f"nginx did not start: {(res.stderr or res.stdout).strip()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.probe_pid()
            if pid and self.probe_workers():
                return pid
            time.sleep(0.05)
        raise NginxError(f"nginx did not write its pid file {self.paths.nginx_pid} within {timeout:.0f} s")

    def apply_reload(self, timeout: float = 10) -> None:
        """Graceful reload: new workers take new connections, old ones finish theirs."""
        pid = self.probe_pid()
        if pid is None:
            self.apply_start()
            return
        before = set(self.probe_workers())
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # The master starts new workers once it has read the new config.
            if set(self.probe_workers()) - before:
                # Old workers still accept new connections (old config, old certificate) until they
                # handle the master's QUIT; once they say "shutting down" only new workers accept.
                while time.monotonic() < deadline and not all(_stopped_accepting(w) for w in before):
                    time.sleep(0.02)
                return
            time.sleep(0.02)
        raise NginxError(f"nginx did not start new workers after the reload (see {self.error_log})")

    def apply_stop(self, timeout: float = 15) -> bool:
        pid = self.probe_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.05)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            time.sleep(0.5)
        return True
