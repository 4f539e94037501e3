"""Loopback ports for the deployment's internal servers: the usual one, or a free one if taken."""

from __future__ import annotations

import random
import socket


def probe_port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# Below the kernel's ephemeral range (32768-60999 on Linux): a port picked from that range can be
# taken by some process's outgoing connection while Jupyter restarts, and the restart then fails.
FALLBACK_RANGE = range(20000, 32768)


def probe_free_port(preferred: int, avoid: set[int] = frozenset()) -> int:
    if preferred not in avoid and probe_port_free(preferred):
        return preferred
    candidates = [p for p in FALLBACK_RANGE if p not in avoid]
    random.shuffle(candidates)
    for port in candidates[:2000]:
        if probe_port_free(port):
            return port
    raise OSError(f"no free loopback port in {FALLBACK_RANGE.start}-{FALLBACK_RANGE.stop - 1}")


PREFERRED = {"jupyter_port": 8888, "hub_port": 8081, "proxy_port": 8000, "proxy_api_port": 8001}
NEEDED = {"notebook": ("jupyter_port",), "hub": ("hub_port", "proxy_port", "proxy_api_port")}


def resolve_internal_ports(internal: dict, mode: str, public: set[int]) -> dict:
    """A new [internal] table where each port the mode needs and that is 0 is picked now."""
    out = dict(internal)
    taken = set(public) | {p for p in out.values() if p}
    for key in NEEDED[mode]:
        if not out.get(key):
            out[key] = probe_free_port(PREFERRED[key], taken)
            taken.add(out[key])
    return out
