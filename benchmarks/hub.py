"""JupyterHub behind nginx: time to a first spawn, and N users spawning at once.

A hub deployment of its own (shared-password authenticator, every user allowed, no culling),
users who log in through nginx over HTTPS and start their servers the way a browser does
(GET hub/spawn), each timed until its own server answers through nginx. The system accounts
the spawner makes for these users (jupyter-<name>) are removed afterwards; only accounts this
run made are touched.
"""

from __future__ import annotations

import concurrent.futures
import os
import pwd
import re
import secrets
import statistics
import subprocess
import time
from pathlib import Path

from benchmarks.deployment import DOMAIN, dk, free_ports, kill_leftovers

SPAWN_TIMEOUT = 180


def _available() -> str | None:
    """Why hub mode cannot be measured here, or None."""
    try:
        from deploykit import hub
    except ImportError as exc:
        return f"deploykit.hub does not import: {exc}"
    if not hasattr(hub, "build_hub_files"):
        return "hub mode is not implemented yet (deploykit/hub.py)"
    if os.geteuid() != 0:
        return "the localprocess spawner needs root (run the benchmark as root)"
    return None


def _session(cafile: Path):
    import requests

    s = requests.Session()
    s.trust_env = False
    s.verify = str(cafile)
    return s


def _login(base: str, cafile: Path, user: str, password: str):
    s = _session(cafile)
    page = s.get(base + "hub/login", timeout=30)
    xsrf = s.cookies.get("_xsrf")
    if xsrf is None:
        m = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        xsrf = m.group(1) if m else ""
    res = s.post(base + "hub/login", data={"username": user, "password": password, "_xsrf": xsrf},
                 allow_redirects=False, timeout=30, headers={"Referer": base + "hub/login"})
    if res.status_code != 302:
        raise RuntimeError(f"hub login for {user} failed: {res.status_code}")
    return s


def _spawn_and_wait(base: str, s, user: str) -> float:
    """Seconds from asking for the server to it answering /api through nginx."""
    t0 = time.perf_counter()
    s.get(base + f"hub/spawn/{user}", allow_redirects=False, timeout=60)
    deadline = time.monotonic() + SPAWN_TIMEOUT
    while time.monotonic() < deadline:
        try:
            res = s.get(base + f"user/{user}/api", allow_redirects=False, timeout=10)
            if res.status_code == 200 and "version" in res.text:
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{user}'s server did not answer within {SPAWN_TIMEOUT} s")


def measure_hub(workdir: Path, spawns: int, log) -> dict:
    why = _available()
    if why:
        return {"measured": False, "reason": why}
    from deploykit.hub import SHARED_PASSWORD_MIN

    state = workdir / "state"
    state.mkdir(parents=True, mode=0o700)
    http_port, https_port, hub_port, proxy_port, api_port = free_ports(5)
    (state / "deploykit.toml").write_text(
        f'[deployment]\ndomain = "{DOMAIN}"\nmode = "hub"\n\n[internal]\nhub_port = {hub_port}\n'
        f'proxy_port = {proxy_port}\nproxy_api_port = {api_port}\n')
    (state / "deploykit.toml").chmod(0o600)
    password = secrets.token_urlsafe(max(SHARED_PASSWORD_MIN, 16))
    tag = secrets.token_hex(3)
    users = [f"dkb{tag}{i}" for i in range(spawns + 1)]
    existing = {u for u in users if _account_exists("jupyter-" + u)}
    if existing:
        return {"measured": False, "reason": f"accounts already exist: {sorted(existing)}"}
    out: dict = {"measured": False}
    try:
        res, took = dk("provision", "--mode", "hub", "--target", "local", "--state-dir", state, "--domain", DOMAIN,
                       "--http-port", http_port, "--https-port", https_port, "--authenticator", "shared-password",
                       "--allow-all", "--idle-timeout", 0, "--shared-password-stdin", input=password + "\n")
        if res.returncode != 0:
            out["reason"] = f"hub provision failed ({res.returncode}): {(res.stderr or res.stdout).strip()[-300:]}"
            return out
        out["provision_s"] = round(took, 2)
        cafile = state / "tls" / "self-signed" / "cert.pem"
        base = f"https://{DOMAIN}:{https_port}/"
        first = _login(base, cafile, users[0], password)
        out["first_spawn_s"] = round(_spawn_and_wait(base, first, users[0]), 2)
        log(f"    first spawn {out['first_spawn_s']:.2f} s")
        sessions = {u: _login(base, cafile, u, password) for u in users[1:]}
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(sessions)) as pool:
            futures = {u: pool.submit(_spawn_and_wait, base, s, u) for u, s in sessions.items()}
            times = {u: f.result() for u, f in futures.items()}
        out["concurrent"] = len(sessions)
        out["concurrent_all_s"] = round(time.perf_counter() - t0, 2)
        out["concurrent_median_s"] = round(statistics.median(times.values()), 2)
        out["concurrent_max_s"] = round(max(times.values()), 2)
        out["measured"] = True
        log(f"    {len(sessions)} concurrent spawns: all answering after {out['concurrent_all_s']:.2f} s "
            f"(median user {out['concurrent_median_s']:.2f} s)")
    except Exception as exc:  # noqa: BLE001 - reported, never hidden
        out["reason"] = f"{type(exc).__name__}: {exc}"
    finally:
        if (state / "deploykit.toml").exists():
            dk("stop", "--state-dir", state, timeout=240)
        kill_leftovers(str(workdir))
        _remove_accounts(["jupyter-" + u for u in users])
    return out


def _account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _remove_accounts(names: list[str]) -> None:
    """The accounts this run's users got: their processes first (by uid), then the accounts."""
    for name in names:
        try:
            uid = pwd.getpwnam(name).pw_uid
        except KeyError:
            continue
        for pid_dir in Path("/proc").iterdir():
            if pid_dir.name.isdigit():
                try:
                    if pid_dir.stat().st_uid == uid:
                        os.kill(int(pid_dir.name), 9)
                except OSError:
                    pass
        subprocess.run(["userdel", "--remove", name], capture_output=True, timeout=60)
