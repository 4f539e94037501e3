"""Test helpers shared by every test module: run deploykit, provision real deployments, talk to
Jupyter over HTTPS and WSS through nginx.

Test traffic only ever goes to loopback: test domains resolve to 127.0.0.1 inside the test
process (see conftest.py), and trust is explicit (the deployment's own certificate).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
PASSWORD = "correct-horse-battery"
TEST_SUFFIXES = (".test", "example.com", ".local", ".internal")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYKIT_")}
    env.update(extra)
    return env


def dk(*args, input: str | None = None, timeout: float = 300, env: dict | None = None,
       stdin=None) -> subprocess.CompletedProcess:
    """Run the real deploykit CLI in a subprocess, as an operator would."""
    kwargs = {"stdin": stdin} if stdin is not None else {"input": input if input is not None else ""}
    return subprocess.run([sys.executable, "-m", "deploykit", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env or clean_env(), **kwargs)


def tree_snapshot(directory: Path) -> dict:
    """Every path under directory with its mode and content hash: to prove nothing changed."""
    import hashlib

    out = {}
    d = Path(directory)
    if not d.exists():
        return {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        if p.is_file() and not p.is_symlink():
            out[str(p)] = (st.st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            out[str(p)] = (st.st_mode, None)
    return out


def kill_leftovers(state_dir: Path) -> None:
    """Safety net after a test: no process mentioning this state dir survives."""
    needle = str(state_dir)
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd:
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except OSError:
                pass


def processes_mentioning(needle: str) -> list[str]:
    found = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (pid_dir / "stat").read_text()
        except OSError:
            continue
        if needle in cmd and stat.split(") ", 1)[1][0] != "Z":
            found.append(f"{pid_dir.name}: {cmd}")
    return found


@dataclasses.dataclass
class Deployment:
    state_dir: Path
    domain: str
    http_port: int
    https_port: int
    base_url: str = "/"
    password: str = PASSWORD
    tls: bool = True

    @property
    def cert(self) -> Path:
        return self.state_dir / "tls" / "self-signed" / "cert.pem"

    @property
    def origin(self) -> str:
        return f"https://{self.domain}:{self.https_port}"

    def url(self, path: str = "") -> str:
        scheme, port = ("https", self.https_port) if self.tls else ("http", self.http_port)
        return f"{scheme}://{self.domain}:{port}{self.base_url}{path}"

    def ws_url(self, path: str) -> str:
        return self.url(path).replace("https://", "wss://").replace("http://", "ws://")

    def session(self):
        import requests

        s = requests.Session()
        s.verify = str(self.cert) if self.tls else True
        s.trust_env = False  # REQUESTS_CA_BUNDLE is set on this machine; trust is explicit here
        return s

    def dk(self, *args, **kwargs) -> subprocess.CompletedProcess:
        return dk(*args, "--state-dir", self.state_dir, **kwargs)

    def status(self) -> dict:
        res = self.dk("status", "--json")
        return json.loads(res.stdout)

    def program_pid(self, name: str) -> int | None:
        for p in self.status()["programs"]:
            if p["name"] == name:
                return p["pid"]
        return None

    def stop(self) -> None:
        self.dk("stop", timeout=120)
        kill_leftovers(self.state_dir)


def provision(state_dir: Path, domain: str = "jupyter.test", base_url: str = "/", extra=(),
              password: str = PASSWORD, check: bool = True) -> tuple[Deployment, subprocess.CompletedProcess]:
    http_port, https_port = free_ports(2)
    args = ["provision", "--target", "local", "--state-dir", state_dir, "--domain", domain,
            "--http-port", http_port, "--https-port", https_port, "--base-url", base_url, *extra]
    if password is not None:
        args.append("--password-stdin")
    res = dk(*args, input=(password + "\n") if password is not None else "")
    d = Deployment(Path(state_dir), domain, http_port, https_port, base_url if base_url.endswith("/") else base_url + "/",
                   password, tls="off" not in [str(x) for x in extra])
    if check and res.returncode != 0:
        kill_leftovers(Path(state_dir))
        raise AssertionError(f"provision failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return d, res


# -- Jupyter over HTTPS and WSS ------------------------------------------------------------

def login(dep: Deployment, session=None, password: str | None = None, login_path: str = "login"):
    """Log in through the real login form, _xsrf included. Returns (session, response)."""
    s = session or dep.session()
    page = s.get(dep.url(login_path))
    page.raise_for_status()
    xsrf = s.cookies.get("_xsrf")
    if xsrf is None:
        m = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        xsrf = m.group(1) if m else ""
    res = s.post(dep.url(login_path), data={"password": dep.password if password is None else password,
                                            "_xsrf": xsrf}, allow_redirects=False,
                 headers={"Referer": dep.url(login_path), "Origin": dep.origin})
    return s, res


def xsrf_headers(session, dep: Deployment) -> dict:
    return {"X-XSRFToken": session.cookies.get("_xsrf", ""), "Referer": dep.url(), "Origin": dep.origin}


def start_kernel(session, dep: Deployment, api_prefix: str = "", name: str | None = None) -> str:
    body = {"name": name} if name else {}
    res = session.post(dep.url(f"{api_prefix}api/kernels"), json=body, headers=xsrf_headers(session, dep))
    res.raise_for_status()
    return res.json()["id"]


def execute(session, dep: Deployment, kernel_id: str, code: str, api_prefix: str = "",
            timeout: float = 60) -> str:
    """Run code in the kernel over wss:// through nginx; return the text of its result or stream."""
    import ssl

    import websocket

    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    sslopt = {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(dep.cert)} if dep.tls else {}
    ws = websocket.create_connection(dep.ws_url(f"{api_prefix}api/kernels/{kernel_id}/channels"),
                                     cookie=cookie, origin=dep.origin if dep.tls else dep.url().rstrip("/"),
                                     sslopt=sslopt, timeout=timeout,
                                     header={"X-XSRFToken": session.cookies.get("_xsrf", "")})
    try:
        return run_on_socket(ws, code, timeout)
    finally:
        ws.close()


def run_on_socket(ws, code: str, timeout: float = 60) -> str:
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))
    deadline = time.monotonic() + timeout
    out = []
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "execute_result":
            out.append(msg["content"]["data"]["text/plain"])
        elif kind == "stream":
            out.append(msg["content"]["text"])
        elif kind == "error":
            raise AssertionError(f"kernel error: {msg['content']['ename']}: {msg['content']['evalue']}")
        elif kind == "status" and msg["content"]["execution_state"] == "idle" and out:
            break
        elif kind == "execute_reply" and out:
            break
    return "".join(out).strip()


def wait_until(fn, timeout: float = 60, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
