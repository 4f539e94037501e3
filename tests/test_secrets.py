"""Issue 8, test 2: secrets stay secret.

While `deploykit provision` runs, a sampler thread reads every process's command line
(/proc/*/cmdline, readable by every user) and the environment of the deployment's processes; no
password or generated secret may appear in any of them. Afterwards: secret files are 0600 and
directories 0700, no file readable by others holds a secret, an environment that holds one is
not readable by another user, and neither the logs nor `status --json` / `doctor --json` show
one. Notebook mode (a given password, then a generated one) and hub mode (shared password,
generated admin password, cookie secret and tokens).
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support import clean_env, dk, free_ports, kill_leftovers

pytestmark = pytest.mark.real

SHARED_PASSWORD = "shared-hub-secret-9Q"


class ProcSampler(threading.Thread):
    """Reads /proc over and over (bounded in time) and keeps every distinct command line seen,
    and the environment of each process whose command line or environment mentions the state
    dir (the deployment's daemons, and what they exec: the proxy launcher becomes node)."""

    def __init__(self, needle: str, limit: float = 600):
        super().__init__(daemon=True)
        self.needle = needle.encode()
        self.limit = limit
        self.done = threading.Event()
        self.cmdlines: dict[bytes, int] = {}
        self.environs: dict[int, tuple[bytes, int]] = {}
        self.seen: set[int] = set()
        self.rounds = 0

    def run(self):
        deadline = time.monotonic() + self.limit
        while not self.done.is_set() and time.monotonic() < deadline:
            for pid_dir in Path("/proc").iterdir():
                if not pid_dir.name.isdigit():
                    continue
                try:
                    cmd = (pid_dir / "cmdline").read_bytes()
                except OSError:
                    continue
                pid = int(pid_dir.name)
                self.cmdlines.setdefault(cmd, pid)
                if pid not in self.seen or pid in self.environs:
                    self.seen.add(pid)
                    self.read_environ(pid_dir, force=self.needle in cmd)
            self.rounds += 1
            time.sleep(0.01)

    def read_environ(self, pid_dir: Path, force: bool = False) -> None:
        try:
            env = (pid_dir / "environ").read_bytes()
            uid = (pid_dir / "environ").stat().st_uid
        except OSError:
            return
        if force or self.needle in env or int(pid_dir.name) in self.environs:
            self.environs[int(pid_dir.name)] = (env, uid)

    def stop(self):
        self.done.set()
        self.join(timeout=30)
        for pid in list(self.environs):  # once more, after any exec
            self.read_environ(Path(f"/proc/{pid}"))


def run_sampled(args: list, input: str, state_dir: Path) -> tuple[subprocess.CompletedProcess, ProcSampler]:
    sampler = ProcSampler(str(state_dir))
    sampler.start()
    try:
        res = subprocess.run([sys.executable, "-m", "deploykit", *map(str, args)], input=input, text=True,
                             capture_output=True, timeout=300, env=clean_env())
    finally:
        sampler.stop()
    return res, sampler


def forms(secret: str) -> list[bytes]:
    """The secret as it could leak: as is, and (for PEM keys) any line of its base64 body."""
    out = [secret.encode()]
    if "PRIVATE KEY" in secret:
        out = [line.encode() for line in secret.splitlines() if line and not line.startswith("-----")]
    return [f for f in out if len(f) >= 8]


def read_secrets(state_dir: Path) -> dict[str, str]:
    """Every secret deploykit keeps: the files in secrets/ and the private keys under tls/."""
    out = {}
    for p in (state_dir / "secrets").iterdir():
        out[p.name] = p.read_text().strip()
    for p in (state_dir / "tls").rglob("*key*.pem"):
        out[str(p.relative_to(state_dir))] = p.read_text()
    return out


def assert_nowhere(secrets: dict[str, str], where: str, blobs) -> None:
    for name, secret in secrets.items():
        for form in forms(secret):
            for label, blob in blobs:
                assert form not in blob, f"{name} appears in {where}: {label}"


def assert_files_private(state_dir: Path, secrets: dict[str, str]) -> None:
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((state_dir / "secrets").stat().st_mode) == 0o700
    for p in (state_dir / "secrets").iterdir():
        st = p.stat()
        assert stat.S_IMODE(st.st_mode) == 0o600, p
        assert st.st_uid == os.geteuid(), p
    record = json.loads((state_dir / "files.json").read_text())
    for d in record["dirs"]:
        if Path(d["path"]).exists() and d["mode"] == "0700":
            assert stat.S_IMODE(Path(d["path"]).stat().st_mode) == 0o700, d
    for p in state_dir.rglob("*"):
        if not p.is_file() or p.is_symlink():
            continue
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            data = p.read_bytes()
            assert_nowhere(secrets, f"a file readable by others ({p}, {mode:04o})", [(str(p), data)])


def assert_environments_private(sampler: ProcSampler, secrets: dict[str, str]) -> None:
    for pid, (env, uid) in sampler.environs.items():
        holds = [n for n, s in secrets.items() for f in forms(s) if f in env]
        if holds:
            # /proc/PID/environ is 0400: only the process's own user (and root) can read it.
            name = pwd.getpwuid(uid).pw_name
            assert name not in ("nobody", "nogroup"), (
                f"pid {pid} keeps {holds} in its environment as {name!r}: every other process running "
                "as that shared account can read /proc/PID/environ")


def assert_not_readable_by_another_user(sampler: ProcSampler) -> None:
    """Check the kernel's rule for real: an unprivileged user cannot read these environments."""
    runuser = shutil.which("runuser")
    if runuser is None or os.geteuid() != 0:
        return
    for pid, (_, uid) in sampler.environs.items():
        if not Path(f"/proc/{pid}").exists():
            continue
        other = "daemon" if pwd.getpwuid(uid).pw_name != "daemon" else "bin"
        res = subprocess.run([runuser, "-u", other, "--", "cat", f"/proc/{pid}/environ"], capture_output=True)
        assert res.returncode != 0, f"{other} could read the environment of pid {pid}"


def command_outputs(state_dir: Path) -> list[tuple[str, bytes]]:
    out = []
    for args in (("status", "--json"), ("doctor", "--json"), ("plan",)):
        res = dk(*args, "--state-dir", state_dir)
        out.append((" ".join(args), (res.stdout + res.stderr).encode()))
    return out


def log_files(state_dir: Path) -> list[tuple[str, bytes]]:
    return [(str(p), p.read_bytes()) for p in (state_dir / "logs").rglob("*") if p.is_file()]


def check_all(state_dir: Path, sampler: ProcSampler, extra_secrets: dict[str, str]) -> None:
    secrets = {**read_secrets(state_dir), **extra_secrets}
    assert sampler.rounds > 10, "the sampler hardly ran"
    seen = b"\n".join(sampler.cmdlines)
    assert b"supervisord" in seen and b"nginx" in seen, "the sampler did not see the daemons start"
    assert_nowhere(secrets, "a process's command line", [(repr(c[:200]), c) for c in sampler.cmdlines])
    assert_nowhere(secrets, "a log", log_files(state_dir))
    assert_nowhere(secrets, "command output", command_outputs(state_dir))
    assert_files_private(state_dir, secrets)
    assert_not_readable_by_another_user(sampler)
    assert_environments_private(sampler, secrets)


def test_notebook_secrets_never_leak(tmp_path):
    state = tmp_path / "state"
    http_port, https_port = free_ports(2)
    given = "given-pass-" + base64.b32encode(os.urandom(10)).decode()
    base = ["provision", "--target", "local", "--state-dir", state, "--domain", "jupyter.test",
            "--http-port", http_port, "--https-port", https_port]
    try:
        res, sampler = run_sampled([*base, "--password-stdin"], given + "\n", state)
        assert res.returncode == 0, res.stdout + res.stderr
        assert given not in res.stdout + res.stderr
        check_all(state, sampler, {"given password": given})

        # A generated password is printed once, to the operator, and is nowhere else.
        (state / "secrets" / "notebook-password.hash").unlink()
        res, sampler = run_sampled(base, "", state)
        assert res.returncode == 0, res.stdout + res.stderr
        generated = [line.rsplit(" ", 1)[1] for line in res.stdout.splitlines() if "generated password" in line]
        assert len(generated) == 1, res.stdout
        check_all(state, sampler, {"given password": given, "generated password": generated[0]})
        for p in state.rglob("*"):
            if p.is_file():
                assert generated[0].encode() not in p.read_bytes(), p
    finally:
        dk("stop", "--state-dir", state)
        kill_leftovers(state)


def test_hub_secrets_never_leak(tmp_path):
    state = tmp_path / "state"
    http_port, https_port = free_ports(2)
    args = ["provision", "--target", "local", "--state-dir", state, "--domain", "hub.test", "--mode", "hub",
            "--authenticator", "shared-password", "--shared-password-stdin", "--allow", "alice", "--admin", "bob",
            "--http-port", http_port, "--https-port", https_port]
    try:
        res, sampler = run_sampled(args, SHARED_PASSWORD + "\n", state)
        if res.returncode == 2 and "not implemented" in res.stderr:
            pytest.skip("hub mode is not implemented in this tree")
        assert res.returncode == 0, res.stdout + res.stderr
        secrets = read_secrets(state)
        assert {"proxy-auth-token", "jupyterhub-cookie-secret", "hub-shared-password"} <= set(secrets)
        # The proxy's token is in its environment (CHP reads it from nowhere else): only the proxy's
        # own account (deploykit-proxy, nothing else runs as it) and root can read that.
        check_all(state, sampler, {"shared password": SHARED_PASSWORD})
    finally:
        dk("stop", "--state-dir", state)
        kill_leftovers(state)
