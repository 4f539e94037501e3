"""The deployment under test and the alternatives beside it, all on free loopback ports.

- the deployment: `deploykit provision --target local` in a temporary state dir (HTTPS);
- nginx over plain HTTP: deploykit's own tls = off rendering of the same site, run as a second
  nginx in the temporary dir and pointed at the same Jupyter (the deployment's HTTP port only
  redirects to HTTPS);
- configurable-http-proxy (plain, and HTTPS with the deployment's certificate) in front of the
  same Jupyter.
Only processes started here are ever stopped, by their pid or by the temporary dir in their
command line.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.machine import children

DOMAIN = "localhost"      # resolves to 127.0.0.1 without help, and is a local name for deploykit
PASSWORD = secrets.token_urlsafe(18)


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


def deploykit_argv() -> list[str]:
    """The console script operators run, next to this Python (else `python -m deploykit`)."""
    script = Path(sys.executable).with_name("deploykit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "deploykit"]


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYKIT_")}


def dk(*args, input: str = "", timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    res = subprocess.run([*deploykit_argv(), *map(str, args)], capture_output=True, text=True, input=input,
                         timeout=timeout, env=clean_env())
    return res, time.perf_counter() - t0


def https_get(port: int, path: str, cafile: Path, timeout: float = 5) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=DOMAIN) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {DOMAIN}:{port}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def kill_leftovers(needle: str) -> None:
    """No process mentioning our temporary dir survives (never anything else)."""
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


class Bench:
    """Everything the benchmark starts, under one temporary directory."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.state = workdir / "state"
        self.http_port, self.https_port, self.jupyter_port = free_ports(3)
        self.procs: dict[str, subprocess.Popen] = {}
        self.nginxes: dict = {}

    # -- the deployment ---------------------------------------------------------------------

    @property
    def cert(self) -> Path:
        return self.state / "tls" / "self-signed" / "cert.pem"

    @property
    def key(self) -> Path:
        return self.state / "tls" / "self-signed" / "key.pem"

    def provision(self) -> dict:
        """First provision of the local target, timed to a healthy HTTPS endpoint."""
        # The internal port too: provision prefers 8888, and other deployments on this machine
        # may be starting on it right now.
        self.state.mkdir(mode=0o700, parents=True)
        spec = self.state / "deploykit.toml"
        spec.write_text(f'[deployment]\ndomain = "{DOMAIN}"\n\n[internal]\njupyter_port = {self.jupyter_port}\n')
        spec.chmod(0o600)
        t0 = time.perf_counter()
        res, took = dk("provision", "--target", "local", "--state-dir", self.state, "--domain", DOMAIN,
                       "--http-port", self.http_port, "--https-port", self.https_port, "--password-stdin",
                       input=PASSWORD + "\n")
        if res.returncode != 0:
            raise RuntimeError(f"provision failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        status, body = https_get(self.https_port, "/api", self.cert)
        healthy = time.perf_counter() - t0
        if status != 200 or b"version" not in body:
            raise RuntimeError(f"not healthy after provision: {status} {body[:200]!r}")
        return {"seconds": round(took, 2), "to_healthy_https_seconds": round(healthy, 2),
                "steps": parse_steps(res.stdout)}

    def pids(self) -> dict[str, list[int]]:
        res, _ = dk("status", "--json", "--state-dir", self.state, timeout=60)
        try:
            programs = {p["name"]: p["pid"] for p in json.loads(res.stdout)["programs"]}
        except (ValueError, KeyError):
            programs = {}
        out = {"jupyter": [programs["jupyter"]] if programs.get("jupyter") else []}
        out["nginx (deployment)"] = self._nginx_pids(self.state / "run" / "nginx.pid")
        return out

    @staticmethod
    def _nginx_pids(pidfile: Path) -> list[int]:
        try:
            master = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return []
        return [master, *children(master)]

    def timed_reloads(self, count: int) -> dict:
        noop, noop_changes = [], []
        for _ in range(count):
            res, took = dk("reload", "--state-dir", self.state, timeout=120)
            if res.returncode != 0:
                raise RuntimeError(f"reload failed: {res.stdout}\n{res.stderr}")
            noop.append(took)
            noop_steps = parse_steps(res.stdout)
            m = re.search(r"(\d+) to change", res.stdout)
            noop_changes.append(int(m.group(1)) if m else -1)
        spec = self.state / "deploykit.toml"
        original = spec.read_text()
        changed, steps, changed_files = [], [], []
        try:
            for i in range(count):
                # upload_limit lives in the nginx site only: one file changes, nginx reloads.
                limit = "2g" if i % 2 == 0 else "3g"
                spec.write_text(re.sub(r'(?m)^upload_limit = ".*"$', f'upload_limit = "{limit}"', original))
                res, took = dk("reload", "--state-dir", self.state, timeout=120)
                if res.returncode != 0:
                    raise RuntimeError(f"reload failed: {res.stdout}\n{res.stderr}")
                changed.append(took)
                steps.append(parse_steps(res.stdout))
                m = re.search(r"(\d+) to change", res.stdout)
                changed_files.append(int(m.group(1)) if m else -1)
        finally:
            spec.write_text(original)
            dk("reload", "--state-dir", self.state, timeout=120)
        return {"noop_seconds": [round(x, 3) for x in noop], "one_file_seconds": [round(x, 3) for x in changed],
                "one_file_steps": steps[-1] if steps else {}, "noop_files_changed": noop_changes,
                "one_file_files_changed": changed_files,
                "noop_steps": noop_steps}

    # -- the alternatives -------------------------------------------------------------------

    def start_chp(self, name: str, tls: bool) -> int:
        chp = shutil.which("configurable-http-proxy")
        port, api_port = free_ports(2)
        argv = [chp, "--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1",
                "--api-port", str(api_port), "--default-target", f"http://127.0.0.1:{self.jupyter_port}",
                "--log-level", "warn"]
        if tls:
            argv += ["--ssl-key", str(self.key), "--ssl-cert", str(self.cert)]
        # The API token through the environment, never argv.
        env = {**clean_env(), "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(16), "BENCH_DIR": str(self.dir)}
        log = open(self.dir / f"chp-{name}.log", "wb")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return port
            except OSError:
                if self.procs[name].poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError(f"configurable-http-proxy did not start; see {self.dir / f'chp-{name}.log'}")

    def start_plain_nginx(self, name: str, static_dirs) -> int:
        """deploykit's tls = off site for the same Jupyter, as another nginx (rendered, not hand-written)."""
        from deploykit import fsio
        from deploykit.desired import build_nginx_files
        from deploykit.host import probe_host
        from deploykit.materials import Materials
        from deploykit.nginx import Nginx
        from deploykit.paths import local_paths
        from deploykit.spec import build_spec

        port = free_port()
        spec = build_spec({"deployment": {"domain": DOMAIN, "target": "local"}, "tls": {"mode": "off"},
                           "http": {"http_port": port, "https_port": free_port()},
                           "internal": {"jupyter_port": self.jupyter_port}})
        paths = local_paths(self.dir / name)
        host = probe_host()
        for d in paths.owned_dirs():
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for f in build_nginx_files(spec, paths, host, Materials({}, None, None), self.jupyter_port,
                                   spec.http.base_url + "login", static_dirs):
            f.path.parent.mkdir(parents=True, exist_ok=True)
            fsio.apply_write_atomic(f.path, f.content, f.mode)
        nginx = Nginx(paths, host.nginx)
        ok, why = nginx.probe_config()
        if not ok:
            raise RuntimeError(f"the plain-HTTP nginx config is invalid: {why}")
        nginx.apply_start()
        self.nginxes[name] = nginx
        return port

    def plain_nginx_pids(self, name: str) -> list[int]:
        return self._nginx_pids(self.dir / name / "run" / "nginx.pid")

    # -- teardown ---------------------------------------------------------------------------

    def stop(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for nginx in self.nginxes.values():
            try:
                nginx.apply_stop()
            except Exception:  # noqa: BLE001 - the safety net below still runs
                pass
        if (self.state / "deploykit.toml").exists():
            dk("stop", "--state-dir", self.state, timeout=120)
        kill_leftovers(str(self.dir))


STEP = re.compile(r"^\s+(\w+)\s+.*\((\d+\.\d+) s\)\s*$")


def parse_steps(output: str) -> dict[str, float]:
    """deploykit's own progress lines ('  verify  ... (1.23 s)') as step -> seconds."""
    out: dict[str, float] = {}
    for line in output.splitlines():
        m = STEP.match(line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + float(m.group(2))
    return out
