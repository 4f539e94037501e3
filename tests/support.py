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


# -- name resolution for deploykit subprocesses ----------------------------------------------

def loopback_resolver_env(directory: Path, names: dict, **extra) -> dict:
    """An environment in which Python subprocesses (deploykit, certbot) resolve names as given:
    {"jupyter.test": "127.0.0.1", "gone.test": None}; None makes the name fail to resolve.

    What conftest.py does inside the test process, for the CLI: a sitecustomize on PYTHONPATH.
    Only loopback addresses are accepted, so no test traffic can leave the machine.
    """
    import ipaddress

    for address in names.values():
        assert address is None or ipaddress.ip_address(address).is_loopback, address
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(
        "import socket\n"
        f"_NAMES = {dict(names)!r}\n"
        "_real = socket.getaddrinfo\n"
        "def _getaddrinfo(host, *args, **kwargs):\n"
        "    if isinstance(host, str) and host.lower().rstrip('.') in _NAMES:\n"
        "        address = _NAMES[host.lower().rstrip('.')]\n"
        "        if address is None:\n"
        "            raise socket.gaierror(socket.EAI_NONAME, 'Name or service not known')\n"
        "        host = address\n"
        "    return _real(host, *args, **kwargs)\n"
        "socket.getaddrinfo = _getaddrinfo\n")
    return clean_env(PYTHONPATH=str(directory), **extra)


# -- Bounded HTTPS load through nginx (safe-apply tests), run in a second process ----------------

def https_load(port: int, domain: str, cafile: str, path: str, stop_file: str, min_requests: int = 2000,
               max_requests: int = 20000, max_seconds: float = 120.0, threads: int = 8,
               keepalive: bool = False) -> dict:
    """GET path over HTTPS on 127.0.0.1:port (SNI and Host = domain) from several threads until
    stop_file exists and at least min_requests were made (bounded by max_requests and
    max_seconds). Returns counts and the first failures. keepalive=False opens one TLS
    connection per request, as new visitors do. keepalive=True reuses one per thread and, like
    browsers and urllib3 (RFC 9112 9.3.1), sends a request again on a new connection when a
    reused one was closed before any byte of the response came (nginx closes idle keepalive
    connections when a reload retires their worker): counted as "retried", not as failed."""
    import http.client
    import ssl
    import threading

    ctx = ssl.create_default_context(cafile=cafile)
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    host = f"{domain}:{port}"
    deadline = time.monotonic() + max_seconds
    lock = threading.Lock()
    stats = {"ok": 0, "failed": 0, "retried": 0, "failures": [], "statuses": {}}

    def connect():
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn = http.client.HTTPSConnection(domain, port, context=ctx, timeout=10)
        conn.sock = ctx.wrap_socket(sock, server_hostname=domain)
        return conn

    def done() -> bool:
        total = stats["ok"] + stats["failed"]
        return (total >= max_requests or time.monotonic() > deadline
                or (total >= min_requests and os.path.exists(stop_file)))

    def worker():
        conn = None
        while True:
            with lock:
                if done():
                    break
            retried = False
            for attempt in (1, 2):
                reused = conn is not None
                try:
                    if conn is None:
                        conn = connect()
                    conn.request("GET", path, headers={"Host": host, **({} if keepalive else {"Connection": "close"})})
                    res = conn.getresponse()
                    res.read()
                    ok, what = res.status == 200, res.status
                    if not keepalive or res.will_close:
                        conn.close()
                        conn = None
                except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                    ok, what = False, f"{type(exc).__name__}: {exc}"
                    if conn is not None:
                        conn.close()
                    conn = None
                    if reused and attempt == 1 and isinstance(exc, (http.client.RemoteDisconnected,
                                                                     ConnectionResetError, BrokenPipeError)):
                        retried = True
                        continue
                break
            with lock:
                stats["retried"] += retried
                stats["ok" if ok else "failed"] += 1
                stats["statuses"][str(what) if not ok else "200"] = stats["statuses"].get(
                    str(what) if not ok else "200", 0) + 1
                if not ok and len(stats["failures"]) < 20:
                    stats["failures"].append(f"{time.time():.3f} {what}")
        if conn is not None:
            conn.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    stats["requests"] = stats["ok"] + stats["failed"]
    return stats


def start_https_load(dep: Deployment, stop_file: Path, path: str = "api", **kwargs) -> subprocess.Popen:
    """https_load in a second process; its stdout is one JSON line of stats when it ends."""
    args = dict(port=dep.https_port, domain=dep.domain, cafile=str(dep.cert), path=dep.base_url + path,
                stop_file=str(stop_file), **kwargs)
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import support; "
            "print(json.dumps(support.https_load(**json.loads(sys.argv[2]))))")
    return subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).parent), json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())


# -- JupyterHub mode: real system users, hub login, spawn, code through nginx -> proxy -> server --

def make_system_user(prefix: str = "dkt") -> tuple[str, str]:
    """A real system account with a home and a password (given to chpasswd on stdin, never argv)."""
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex[:12]}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True,
                   capture_output=True, timeout=60)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True,
                   timeout=60)
    return name, password


def kill_user_processes(name: str) -> None:
    """Every process of a test account (its Jupyter server and kernels): the account is the test's own."""
    import pwd

    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            status = (pid_dir / "status").read_text()
        except OSError:
            continue
        uids = next((line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")), [])
        if str(uid) in uids:
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except OSError:
                pass


def remove_system_user(name: str) -> None:
    kill_user_processes(name)
    subprocess.run(["userdel", "--remove", "--force", name], capture_output=True, timeout=60)


def user_processes(name: str) -> list[str]:
    import pwd

    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return []
    return processes_of_uid(uid)


def processes_of_uid(uid: int) -> list[str]:
    """'pid: command line' of every live (not zombie) process whose uids include uid."""
    found = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            status = (pid_dir / "status").read_text()
            cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        uids = next((line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")), [])
        state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "")
        if str(uid) in uids and state != "Z":
            found.append(f"{pid_dir.name}: {cmd}")
    return found


def provision_hub(state_dir: Path, domain: str = "hub.test", base_url: str = "/", extra=(), input: str = "",
                  check: bool = True) -> tuple[Deployment, subprocess.CompletedProcess]:
    """A real hub deployment. Its loopback ports are picked here and written to the spec first,
    so parallel test runs never race for JupyterHub's usual 8000/8001/8081."""
    state_dir = Path(state_dir)
    http_port, https_port, hub_port, proxy_port, api_port = free_ports(5)
    state_dir.mkdir(parents=True, mode=0o700)
    (state_dir / "deploykit.toml").write_text(
        f'[deployment]\ndomain = "{domain}"\nmode = "hub"\ntarget = "local"\n\n'
        f"[internal]\nhub_port = {hub_port}\nproxy_port = {proxy_port}\nproxy_api_port = {api_port}\n")
    res = dk("provision", "--state-dir", state_dir, "--mode", "hub", "--http-port", http_port,
             "--https-port", https_port, "--base-url", base_url, *extra, input=input)
    d = Deployment(state_dir, domain, http_port, https_port, base_url if base_url.endswith("/") else base_url + "/",
                   password="")
    if check and res.returncode != 0:
        d.stop()
        raise AssertionError(f"provision failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return d, res


def cookie_for(session, name: str, path: str) -> str:
    """A cookie by name and path: the hub and each user server set their own _xsrf."""
    for c in session.cookies:
        if c.name == name and c.path == path:
            return c.value
    return ""


def hub_login(dep: Deployment, username: str, password: str, session=None):
    """Log in through the hub's real login form (_xsrf included). Returns (session, response)."""
    s = session or dep.session()
    page = s.get(dep.url("hub/login"))
    page.raise_for_status()
    xsrf = cookie_for(s, "_xsrf", f"{dep.base_url}hub/")
    res = s.post(dep.url("hub/login"), data={"username": username, "password": password, "_xsrf": xsrf},
                 allow_redirects=False, headers={"Referer": dep.url("hub/login"), "Origin": dep.origin})
    return s, res


def hub_headers(session, dep: Deployment) -> dict:
    return {"X-XSRFToken": cookie_for(session, "_xsrf", f"{dep.base_url}hub/"), "Referer": dep.url("hub/home"),
            "Origin": dep.origin}


def hub_api(session, dep: Deployment, method: str, path: str, **kwargs):
    return session.request(method, dep.url(f"hub/api/{path}"), headers=hub_headers(session, dep), **kwargs)


def hub_server(session, dep: Deployment, username: str) -> dict | None:
    """The user's default server as the hub reports it (None: not running)."""
    res = hub_api(session, dep, "GET", f"users/{username}")
    res.raise_for_status()
    return (res.json().get("servers") or {}).get("")


def hub_spawn(session, dep: Deployment, username: str, timeout: float = 120) -> float:
    """Start the user's server through the hub's REST API; wait until ready. Returns seconds taken."""
    start = time.monotonic()
    res = hub_api(session, dep, "POST", f"users/{username}/server")
    assert res.status_code in (201, 202, 400), (res.status_code, res.text)  # 400: already running
    wait_until(lambda: (hub_server(session, dep, username) or {}).get("ready"), timeout=timeout,
               what=f"{username}'s server to be ready")
    return time.monotonic() - start


def hub_open_server(session, dep: Deployment, username: str):
    """Visit the user's server as a browser does: its OAuth round trip through the hub sets its cookie."""
    res = session.get(dep.url(f"user/{username}/lab"))
    res.raise_for_status()
    return res


def user_headers(session, dep: Deployment, username: str) -> dict:
    return {"X-XSRFToken": cookie_for(session, "_xsrf", f"{dep.base_url}user/{username}/"),
            "Referer": dep.url(f"user/{username}/lab"), "Origin": dep.origin}


def hub_start_kernel(session, dep: Deployment, username: str) -> str:
    res = session.post(dep.url(f"user/{username}/api/kernels"), json={}, headers=user_headers(session, dep, username))
    res.raise_for_status()
    return res.json()["id"]


def hub_execute(session, dep: Deployment, username: str, kernel_id: str, code: str, timeout: float = 60) -> str:
    """Run code over wss:// through nginx -> configurable-http-proxy -> the user's server."""
    import ssl

    import websocket

    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies
                       if c.path in ("/", f"{dep.base_url}user/{username}/"))
    sslopt = {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(dep.cert)} if dep.tls else {}
    ws = websocket.create_connection(dep.ws_url(f"user/{username}/api/kernels/{kernel_id}/channels"),
                                     cookie=cookie, origin=dep.origin, sslopt=sslopt, timeout=timeout)
    try:
        return run_on_socket(ws, code, timeout)
    finally:
        ws.close()
