"""Facts about the machine deploykit runs on, gathered once and passed to the pure core."""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import socket
import sys


@dataclasses.dataclass(frozen=True)
class Host:
    python: str          # the Python deploykit runs in (its Jupyter, unless the spec names another)
    euid: int
    user: str
    home: str
    ipv6: bool           # whether nginx can also listen on [::]
    nginx: str           # the nginx binary ("" when missing)
    systemd: bool        # systemd is PID 1

    @property
    def is_root(self) -> bool:
        return self.euid == 0

    def program_path(self, python: str) -> str:
        """PATH for programs deploykit starts: the environment's bin first, then the system's."""
        env_bin = os.path.dirname(python)
        return ":".join([env_bin, "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])


def _ipv6_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _systemd_is_pid1() -> bool:
    try:
        with open("/proc/1/comm") as f:
            return f.read().strip() == "systemd"
    except OSError:
        return False


def probe_host() -> Host:
    euid = os.geteuid()
    try:
        entry = pwd.getpwuid(euid)
        user, home = entry.pw_name, entry.pw_dir
    except KeyError:
        user, home = str(euid), "/"
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), "")
    return Host(python=sys.executable, euid=euid, user=user, home=home, ipv6=_ipv6_works(),
                nginx=nginx, systemd=_systemd_is_pid1())
