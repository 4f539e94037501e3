"""Probes through nginx: does the deployment answer over HTTPS (and the WebSocket path)?

Connects to loopback with the deployment's domain as SNI and Host, so it checks exactly what
nginx serves for that name, whatever DNS says. Trust is explicit: the certificate nginx is
configured with is the anchor (a partial chain is accepted, so an issued leaf works too).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import socket
import ssl
import time
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Probe:
    ok: bool
    status: int | None
    detail: str
    body: bytes = b""
    headers: dict = dataclasses.field(default_factory=dict)


def tls_context(cafile: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if cafile:
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


class _LoopbackHTTPS(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 with another name for SNI and certificate checks."""

    def __init__(self, port: int, server_name: str, context: ssl.SSLContext, timeout: float):
        super().__init__("127.0.0.1", port, context=context, timeout=timeout)
        self._server_name = server_name
        self._ctx = context

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self._server_name)


def probe_http(domain: str, port: int, path: str, tls: bool = True, cafile: Path | None = None,
               timeout: float = 5.0, method: str = "GET", headers: dict | None = None) -> Probe:
    host_header = domain if port in (80, 443) else f"{domain}:{port}"
    if ":" in domain:
        host_header = f"[{domain}]" if port in (80, 443) else f"[{domain}]:{port}"
    try:
        if tls:
            conn = _LoopbackHTTPS(port, domain, tls_context(cafile), timeout)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request(method, path, headers={"Host": host_header, **(headers or {})})
        res = conn.getresponse()
        body = res.read()
        conn.close()
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        return Probe(False, None, f"{type(exc).__name__}: {exc}")
    return Probe(200 <= res.status < 400, res.status, f"HTTP {res.status}", body,
                 {k.lower(): v for k, v in res.getheaders()})


def probe_jupyter_api(domain: str, port: int, path: str, tls: bool, cafile: Path | None) -> Probe:
    p = probe_http(domain, port, path, tls, cafile)
    if p.status != 200:
        return p
    try:
        data = json.loads(p.body)
    except ValueError:
        return Probe(False, p.status, "answered, but not with Jupyter's JSON", p.body)
    if "version" not in data:
        return Probe(False, p.status, "answered, but without a version", p.body)
    return Probe(True, 200, f"Jupyter {data['version']} answers", p.body, p.headers)


def wait_for_jupyter(domain: str, port: int, path: str, tls: bool, cafile: Path | None,
                     timeout: float = 60.0, give_up=None) -> Probe:
    """Poll until Jupyter answers through nginx, the timeout passes, or give_up() says why not."""
    deadline = time.monotonic() + timeout
    last = Probe(False, None, "not tried")
    while time.monotonic() < deadline:
        last = probe_jupyter_api(domain, port, path, tls, cafile)
        if last.ok:
            return last
        reason = give_up() if give_up else None
        if reason:
            return Probe(False, last.status, f"{last.detail}; {reason}")
        time.sleep(0.2)
    return last
