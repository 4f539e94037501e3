"""The machine a benchmark ran on, the versions it measured, and who used the CPU during a run.

Numbers from a shared 2-core box mean little without the load beside them: every load run
records how much CPU each measured process and everything else on the machine took.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _first_line(argv: list[str], pattern: str = r"(.*)") -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return "not found"
    text = (res.stdout + res.stderr).strip()
    m = re.search(pattern, text)
    return m.group(1).strip() if m else (text.splitlines() or ["?"])[0]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _distro() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "unknown"


def _memory_gib() -> float:
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        return round(kib / 1024 / 1024, 1)
    except (OSError, AttributeError):
        return 0.0


def describe_machine() -> dict:
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gib": _memory_gib(),
        "kernel": platform.release(), "os": _distro(),
        "virtualization": _first_line(["systemd-detect-virt"]) if Path("/usr/bin/systemd-detect-virt").exists() else "unknown",
        "load_average_at_start": list(os.getloadavg()),
    }


def _module_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def describe_versions(nginx: str, chp: str | None, wrk: str) -> dict:
    import ssl

    import deploykit

    out = {
        "deploykit": deploykit.__version__,
        "python": sys.version.split()[0],
        "nginx": _first_line([nginx, "-v"], r"nginx/(\S+)"),
        "openssl (python)": ssl.OPENSSL_VERSION,
        "wrk": _first_line([wrk, "--version"], r"wrk (\S+)"),
        "configurable-http-proxy": _first_line([chp, "--version"]) if chp else "not found",
        "node": _first_line(["node", "--version"]),
    }
    for pkg in ("jupyter_server", "notebook", "jupyterlab", "tornado", "jupyterhub", "websocket-client"):
        out[pkg] = _module_version(pkg)
    return out


# -- CPU accounting -------------------------------------------------------------------------

def process_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def machine_ticks() -> tuple[int, int]:
    """(busy, total) ticks of all CPUs since boot."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    total = sum(parts[:8])
    return total - idle, total


class CpuMeter:
    """CPU used by named groups of processes between start() and stop(), as % of one core."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = groups

    def _sample(self) -> dict[str, int]:
        return {name: sum(process_ticks(p) for p in pids) for name, pids in self.groups.items()}

    def start(self) -> None:
        self.t0 = os.times().elapsed
        self.before = self._sample()
        self.children_before = os.times().children_user + os.times().children_system
        self.machine_before = machine_ticks()

    def stop(self) -> dict[str, float]:
        elapsed = max(os.times().elapsed - self.t0, 1e-6)
        after = self._sample()
        out = {name: round(100 * (after[name] - self.before[name]) / TICK / elapsed, 1) for name in self.groups}
        # The load generator: waited-for children of this process (wrk exits within the window).
        t = os.times()
        out["load generator"] = round(100 * (t.children_user + t.children_system - self.children_before) / elapsed, 1)
        busy0, total0 = self.machine_before
        busy1, total1 = machine_ticks()
        cores = os.cpu_count() or 1
        machine = 100 * cores * (busy1 - busy0) / max(total1 - total0, 1)
        out["whole machine"] = round(machine, 1)
        out["everything else"] = round(max(machine - sum(v for k, v in out.items() if k != "whole machine"), 0), 1)
        return out
