"""JupyterHub mode: hub config, the proxy as its own program, secrets, access checks.

nginx (TLS, base URL) -> configurable-http-proxy (supervisor program, loopback) -> the hub or a
user's server. The hub (supervisor program, root in the local target so it can check PAM
passwords and start servers as each user) never starts the proxy; both share an auth token
made once and kept in a 0600 file. Rendering here is pure; check_* only look; secrets are
made here but written by apply like every other file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from deploykit import passwords
from deploykit.desired import DesiredState, FileSpec, Program, jupyter_python, public_url
from deploykit.errors import BadInput, OperationFailed
from deploykit.host import Host, probe_host
from deploykit.materials import read_bytes
from deploykit.paths import Paths
from deploykit.render import render_program, render_template
from deploykit.spawners import (
    SpawnerFacts, hub_address, probe_docker_gateway, probe_spawner_facts, render_spawner_config,
)
from deploykit.spec import Spec

# JupyterHub's SharedPasswordAuthenticator refuses shorter ones (it checks at hub start).
SHARED_PASSWORD_MIN = 8
ADMIN_PASSWORD_BYTES = 24          # token_urlsafe -> 32 characters, its admin minimum
NATIVE_MIN_PASSWORD = 8
MIN_IDLE_TIMEOUT = 10              # shorter would cull servers while they are being used
AUTHENTICATOR_CLASSES = {"pam": "pam", "native": "deploykit.nativeauth.NativeAuthenticator",
                         "shared-password": "shared-password"}
# The proxy's auth token is in its environment (CHP reads it from nowhere else), and
# /proc/PID/environ is readable by every process of the same uid: so the proxy gets a system
# account of its own, never a shared one like nobody. Made by ensure_proxy_account.
PROXY_USER = "deploykit-proxy"
PROXY_USER_SHELL = "/usr/sbin/nologin"
PROXY_USER_HOME = "/nonexistent"
# How often the hub compares the proxy's routing table with the running servers and re-adds
# what is missing (JupyterHub does it on each last-activity update): after the proxy restarts
# with an empty table, users' servers are unreachable for at most this long.
ROUTE_CHECK_INTERVAL = 10
# NativeAuthenticator as deploykit configures it (export.py carries the same settings to Z2JH).
NATIVE_AUTHENTICATOR_SETTINGS = {
    # Anyone may sign up; an admin approves each account at hub/authorize before it can log in.
    "enable_signup": True, "open_signup": False,
    "minimum_password_length": NATIVE_MIN_PASSWORD, "check_common_password": True,
    # Slows password guessing on one account down to a try a minute after 5 failures.
    "allowed_failed_logins": 5, "seconds_before_next_try": 60,
}
# Hub names that make a valid jupyter-<name> account (system names: at most 32 characters).
ACCOUNT_NAME_PATTERN = r"^[a-z0-9_][a-z0-9_-]{0,23}$"


# -- paths ------------------------------------------------------------------------------------

def config_path(paths: Paths) -> Path:
    return paths.hub_dir / "jupyterhub_config.py"


def data_dir(paths: Paths) -> Path:
    return paths.state_dir / "jupyterhub"


def server_log_dir(paths: Paths) -> Path:
    """Local user servers' output, one file per server (localspawner.LogFileSpawner)."""
    return paths.log_dir / "user-servers"


def cookie_secret_path(paths: Paths) -> Path:
    return paths.secret("jupyterhub-cookie-secret")


def proxy_token_path(paths: Paths) -> Path:
    return paths.secret("proxy-auth-token")


def service_token_path(paths: Paths) -> Path:
    return paths.secret("hub-service-token")


def shared_password_path(paths: Paths) -> Path:
    return paths.secret("hub-shared-password")


def admin_password_path(paths: Paths) -> Path:
    return paths.secret("hub-admin-password")


# -- who can log in ---------------------------------------------------------------------------

def uses_accounts(spec: Spec) -> bool:
    """Hub users are names, not system accounts: each gets a jupyter-<name> account on first spawn."""
    return spec.hub.authenticator != "pam" and spec.hub.spawner == "localprocess"


def admin_password_wanted(spec: Spec) -> bool:
    return spec.hub.authenticator == "shared-password" and bool(spec.hub.admins)


def check_hub_spec(spec: Spec, paths: Paths, running_as_root: bool | None = None,
                   shared_password_given: bool = False, host: Host | None = None) -> SpawnerFacts:
    """Refuse a hub nobody could use, or one this machine cannot run; shared by provision (before
    anything is written), reload and kernel changes. Returns what the spawner's config needs."""
    hub = spec.hub
    root = os.geteuid() == 0 if running_as_root is None else running_as_root
    if hub.spawner == "localprocess" and (hub.mem_limit or hub.cpu_limit):
        flag, value = ("--mem-limit", hub.mem_limit) if hub.mem_limit else ("--cpu-limit", hub.cpu_limit)
        raise BadInput(flag, value, "the localprocess spawner cannot enforce limits; "
                                    "use --spawner systemd or docker, or drop the limit")
    if hub.spawner == "localprocess" and not root:
        raise BadInput("--mode", "hub", "JupyterHub with the localprocess spawner must run as root "
                                        "(to check passwords and start each user's server as that user); "
                                        "run deploykit as root")
    if 0 < hub.idle_timeout < MIN_IDLE_TIMEOUT:
        raise BadInput("--idle-timeout", hub.idle_timeout,
                       f"at least {MIN_IDLE_TIMEOUT} seconds, or 0 to never cull idle servers")
    if hub.authenticator == "native":
        if not (hub.admins or hub.allowed_users):
            raise BadInput("--admin", "", "the native authenticator needs an admin (--admin USER) to approve "
                                          "sign-ups, or pre-approved users (--allow USER)")
    elif not (hub.admins or hub.allowed_users or hub.allow_all):
        raise BadInput("--allow", "", "nobody could log in: name an admin (--admin USER), "
                                      "allowed users (--allow USER) or pass --allow-all")
    if hub.authenticator == "shared-password" and not hub.allowed_users and not hub.allow_all:
        raise BadInput("--allow", "", "with the shared-password authenticator only admins could log in: "
                                      "name allowed users (--allow USER) or pass --allow-all")
    if hub.authenticator == "pam" and hub.spawner in ("localprocess", "systemd"):
        # Both run each server as the system account of the same name.
        for name in (*hub.admins, *hub.allowed_users):
            if name == "root":
                raise BadInput("--admin" if name in hub.admins else "--allow", name,
                               "root cannot be a hub user (its server would run as root); use an ordinary account")
            try:
                pwd.getpwnam(name)
            except KeyError:
                raise BadInput("--admin" if name in hub.admins else "--allow", name,
                               "no such system user on this host (PAM logs in system accounts); "
                               "create it first, e.g. `useradd -m NAME` and `passwd NAME`") from None
    if uses_accounts(spec):
        for name in (*hub.admins, *hub.allowed_users):
            if not re.match(ACCOUNT_NAME_PATTERN, name):
                raise BadInput("--admin" if name in hub.admins else "--allow", name,
                               "too long for its server's system account jupyter-NAME; "
                               "at most 24 characters here")
    if hub.authenticator == "shared-password" and not (shared_password_given or shared_password_path(paths).exists()):
        raise BadInput("--authenticator", "shared-password",
                       "needs the password users log in with: pass --shared-password-stdin")
    if hub.spawner == "localprocess":
        check_user_environment(spec.deployment.python or sys.executable)
    # Last: the machine itself (systemd as PID 1, the Docker engine and network).
    return probe_spawner_facts(spec, host or probe_host())


def _unreachable_dir(path: Path) -> Path | None:
    """The first directory on the way to path that other users cannot enter, if any."""
    for d in [*reversed(path.parents)]:
        try:
            mode = d.stat().st_mode
        except OSError:
            return d
        if not mode & stat.S_IXOTH:
            return d
    return None


def check_user_environment(python: str) -> None:
    """User servers run as the users: the Jupyter environment must be theirs to run."""
    where = "--python"
    py = Path(python)
    singleuser = py.parent / "jupyterhub-singleuser"
    if not singleuser.exists():
        raise BadInput(where, python, "this environment has no jupyterhub-singleuser; "
                                      "install jupyterhub in it (pip install jupyterhub jupyterlab)")
    for candidate in (py, Path(os.path.realpath(py))):
        blocked = _unreachable_dir(candidate)
        if blocked is not None:
            raise BadInput(where, python, f"other users cannot reach it ({blocked} is not searchable by them), "
                                          "so their servers could not start; build the environment from "
                                          "/usr/bin/python3 somewhere world-readable (e.g. /opt/jupyter) "
                                          "and pass --python, or `chmod o+x` the directories")
        if not os.stat(candidate).st_mode & stat.S_IXOTH:
            raise BadInput(where, python, f"{candidate} is not executable by other users")


def check_hub_input(spec: Spec, opts: dict, paths: Paths) -> dict:
    """Hub-only flags; nothing is written before this returns. Data for apply_hub_input."""
    if opts.get("password_stdin") or opts.get("password_file"):
        raise BadInput("--password-stdin" if opts.get("password_stdin") else "--password-file", "",
                       "hub mode has no Notebook password: users log in through the authenticator "
                       "(--authenticator pam|native|shared-password)")
    out: dict = {}
    if opts.get("shared_password_stdin"):
        if spec.hub.authenticator != "shared-password":
            raise BadInput("--shared-password-stdin", "", "only for --authenticator shared-password")
        from deploykit.cli import read_password_stream

        password = read_password_stream(sys.stdin, "--shared-password-stdin")
        if len(password) < SHARED_PASSWORD_MIN:
            # Never echo the password itself, not even in an error.
            raise BadInput("--shared-password-stdin", f"({len(password)} characters)",
                           f"too short: JupyterHub's shared-password authenticator needs at least "
                           f"{SHARED_PASSWORD_MIN} characters")
        if any(c in password for c in "\x00\r\n"):
            raise BadInput("--shared-password-stdin", "", "one line without control characters")
        out["shared_password"] = password
    if shutil.which("configurable-http-proxy", path=os.environ.get("PATH", "") + ":/usr/local/bin:/usr/bin") is None:
        raise BadInput("configurable-http-proxy", "", "not found on PATH; install it with "
                                                      "`npm install -g configurable-http-proxy`")
    check_hub_spec(spec, paths, shared_password_given="shared_password" in out)
    return out


def apply_hub_input(desired: DesiredState, paths: Paths, hub_opts: dict) -> DesiredState:
    """The desired state with what the operator gave on stdin (the shared password) added."""
    if "shared_password" not in hub_opts:
        return desired
    path = shared_password_path(paths)
    new = FileSpec(path, (hub_opts["shared_password"] + "\n").encode(), mode=0o600, secret=True, kind="secret")
    files = tuple(f for f in desired.files if f.path != path) + (new,)
    return dataclasses.replace(desired, files=files)


# -- the proxy's own account ------------------------------------------------------------------

def proxy_user(host: Host) -> str:
    """Who the proxy runs as: its own account when deploykit is root, else deploykit's user."""
    return PROXY_USER if host.is_root else ""


def build_proxy_useradd_command() -> list[str]:
    # No home, no shell, no password, a group of its own: nothing else ever runs as it.
    return ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", PROXY_USER_HOME,
            "--shell", PROXY_USER_SHELL, "--comment", "configurable-http-proxy (deploykit)", PROXY_USER]


def ensure_proxy_account(host: Host, attempts: int = 20) -> str:
    """Create the proxy's system account when missing; before the proxy starts. '' when not root."""
    if not proxy_user(host):
        return ""
    argv = build_proxy_useradd_command()
    created, error = False, ""
    for _ in range(attempts):
        try:
            uid = pwd.getpwnam(PROXY_USER).pw_uid
            return f"{PROXY_USER} {'created' if created else 'exists'} (uid {uid})"
        except KeyError:
            if created:
                error = "useradd succeeded, yet the account is unknown"
                break
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            error = str(exc)
            break
        if res.returncode == 0:
            created = True
            continue
        # Another run may hold the passwd lock, or have just made the account: look again shortly.
        error = " ".join((res.stderr or res.stdout).split()) or f"exit {res.returncode}"
        time.sleep(0.25)
    raise OperationFailed(f"creating the proxy's user failed ({' '.join(argv)}): {error}")


# -- secrets ----------------------------------------------------------------------------------

def read_or_make_hub_secrets(spec: Spec, paths: Paths) -> dict[Path, bytes]:
    """Existing secrets are kept (sessions and the proxy's token survive every reload)."""
    out: dict[Path, bytes] = {}
    for path in (cookie_secret_path(paths), proxy_token_path(paths), service_token_path(paths)):
        # Hex: JupyterHub decodes cookie_secret_file as hex; tokens are plain text either way.
        out[path] = read_bytes(path) or (passwords.generate_secret_hex() + "\n").encode()
    if spec.hub.authenticator == "shared-password":
        existing = read_bytes(shared_password_path(paths))
        if existing is not None:
            out[shared_password_path(paths)] = existing
        if admin_password_wanted(spec):
            import secrets

            path = admin_password_path(paths)
            out[path] = read_bytes(path) or (secrets.token_urlsafe(ADMIN_PASSWORD_BYTES) + "\n").encode()
    return out


# -- rendering --------------------------------------------------------------------------------

def user_jupyter_path(spec: Spec, paths: Paths) -> list[str]:
    """Directories added to JUPYTER_PATH of every user server (extra kernelspecs live there).

    Kernels (issue 7) extends this; each directory must be readable by every hub user.
    Always set, kernels or not, so that adding one never changes the hub's config.
    """
    from deploykit.kernels import kernel_search_path

    return [kernel_search_path(spec, paths)]


def activity_interval(spec: Spec) -> int:
    """How often activity reaches the hub: JupyterHub's 300 s, or often enough for a short timeout."""
    t = spec.hub.idle_timeout
    return 300 if not t else max(2, min(300, t // 4))


def cull_every(spec: Spec) -> int:
    return max(2, min(300, spec.hub.idle_timeout // 4))


def user_server_config_dir(paths: Paths) -> Path:
    """Config every user's server reads (world-readable, outside the 0700 state dir)."""
    return paths.shared_data_dir / "config"


def build_user_server_config(paths: Paths) -> FileSpec:
    return FileSpec(user_server_config_dir(paths) / "jupyter_server_config.py",
                    render_template("jupyter/user_server_config.py.j2").encode(), mode=0o644)


def user_environment(spec: Spec, paths: Paths, host) -> dict[str, str]:
    python = jupyter_python(spec, host)
    env = {"PATH": host.program_path(python), "JUPYTER_CONFIG_PATH": str(user_server_config_dir(paths))}
    jupyter_path = user_jupyter_path(spec, paths)
    if jupyter_path:
        env["JUPYTER_PATH"] = ":".join(jupyter_path)
    if activity_interval(spec) != 300:
        env["JUPYTERHUB_ACTIVITY_INTERVAL"] = str(activity_interval(spec))
    return env


def singleuser_cmd(spec: Spec, host: Host) -> list[str]:
    """The user server's command, an absolute path first (systemd-run needs one)."""
    return [jupyter_python(spec, host), "-m", "jupyterhub.singleuser"]


def last_activity_interval(spec: Spec) -> int:
    return min(activity_interval(spec), ROUTE_CHECK_INTERVAL)


def render_hub_config(spec: Spec, paths: Paths, host: Host, facts: SpawnerFacts = SpawnerFacts()) -> str:
    """facts: what spawners.probe_spawner_facts found (the Docker network's gateway)."""
    hub, internal, base = spec.hub, spec.internal, spec.http.base_url
    python = jupyter_python(spec, host)
    address = hub_address(spec, facts)
    spawner_config = render_spawner_config(spec, paths, host, facts)
    culler = [host.python, "-m", "jupyterhub_idle_culler", f"--timeout={hub.idle_timeout}",
              f"--cull-every={cull_every(spec)}"]
    return render_template(
        "jupyterhub/jupyterhub_config.py.j2", domain=spec.deployment.domain,
        data_dir=str(data_dir(paths)), db_path=str(data_dir(paths) / "jupyterhub.sqlite"),
        cookie_secret_file=str(cookie_secret_path(paths)),
        bind_url=f"http://127.0.0.1:{internal.proxy_port}{base}",
        hub_bind_url=f"http://{address}:{internal.hub_port}",
        # The proxy reaches the hub from this address; loopback too, which the hub's own
        # requests (services, the culler) come from.
        trusted_ips=list(dict.fromkeys(["127.0.0.1", address])),
        proxy_api_url=f"http://127.0.0.1:{internal.proxy_api_port}",
        proxy_token_file=str(proxy_token_path(paths)), service_token_file=str(service_token_path(paths)),
        last_activity_interval=last_activity_interval(spec),
        authenticator=hub.authenticator, authenticator_class=AUTHENTICATOR_CLASSES[hub.authenticator],
        # Admins are listed as allowed too: JupyterHub lets in only allowed names otherwise.
        admins=sorted(hub.admins), allowed_users=sorted({*hub.admins, *hub.allowed_users}),
        # Native: its own sign-up approval is the gate, so JupyterHub lets every approved user in.
        allow_all=bool(hub.allow_all or hub.authenticator == "native"),
        native_settings=NATIVE_AUTHENTICATOR_SETTINGS,
        shared_password_file=str(shared_password_path(paths)),
        admin_password_file=str(admin_password_path(paths)) if admin_password_wanted(spec) else "",
        idle_timeout=hub.idle_timeout, culler_command=culler,
        default_url=hub.default_url, spawner=hub.spawner, account_spawner=uses_accounts(spec),
        account_name_pattern=ACCOUNT_NAME_PATTERN,
        user_env_prefix=str(Path(python).parent.parent),
        singleuser_cmd=singleuser_cmd(spec, host), server_log_dir=str(server_log_dir(paths)),
        user_environment=user_environment(spec, paths, host),
        spawner_config=spawner_config,
    )


def build_hub_files(spec: Spec, paths: Paths, host: Host, materials,
                    facts: SpawnerFacts = SpawnerFacts()) -> tuple[list[FileSpec], list[Program], int, str]:
    internal, base = spec.internal, spec.http.base_url
    hub_url = f"http://{hub_address(spec, facts)}:{internal.hub_port}"
    config = config_path(paths)
    files = [FileSpec(config, render_hub_config(spec, paths, host, facts).encode(), mode=0o600)]
    hub_env = {"HOME": host.home, "USER": host.user, "PATH": host.program_path(host.python),
               "PYTHONUNBUFFERED": "1"}
    hub_conf = paths.program_conf("jupyterhub")
    files.append(FileSpec(hub_conf, render_program(
        "jupyterhub", "JupyterHub (users' servers outlive its restarts)",
        [host.python, "-m", "jupyterhub", "-f", str(config)], str(paths.hub_dir), hub_env,
        str(paths.log("jupyterhub")),
    ).encode()))
    chp_conf = paths.program_conf("configurable-http-proxy")
    chp_cmd = [host.python, "-m", "deploykit.chp", "--token-file", str(proxy_token_path(paths))]
    if proxy_user(host):
        chp_cmd += ["--user", proxy_user(host)]
    chp_cmd += ["--", "--ip", "127.0.0.1", "--port", str(internal.proxy_port),
                "--api-ip", "127.0.0.1", "--api-port", str(internal.proxy_api_port),
                "--default-target", hub_url, "--error-target", f"{hub_url}{base}hub/error",
                "--log-level", "warn"]
    files.append(FileSpec(chp_conf, render_program(
        "configurable-http-proxy", "configurable-http-proxy (routes to the hub and users' servers)",
        chp_cmd, "/", {"PATH": host.program_path(host.python)}, str(paths.log("configurable-http-proxy")),
    ).encode()))
    secrets = [cookie_secret_path(paths), proxy_token_path(paths), service_token_path(paths)]
    if spec.hub.authenticator == "shared-password":
        secrets.append(shared_password_path(paths))
        if admin_password_wanted(spec):
            secrets.append(admin_password_path(paths))
    programs = [
        Program("configurable-http-proxy", chp_conf, depends_on=(proxy_token_path(paths),)),
        Program("jupyterhub", hub_conf, depends_on=(config, *secrets)),
    ]
    # Read by user servers when they start: a change reaches each server at its next start.
    files.append(build_user_server_config(paths))
    return files, programs, internal.proxy_port, base + "hub/login"


# -- what to tell the operator ----------------------------------------------------------------

def describe_environment(spec: Spec, paths: Paths, host) -> str:
    if spec.hub.spawner != "localprocess":
        return f"user servers started by the {spec.hub.spawner} spawner"
    python = jupyter_python(spec, host)
    who = "each user's own system account" if not uses_accounts(spec) else "a jupyter-<name> account per hub user"
    return (f"{Path(python).parent.parent} (jupyterhub-singleuser from {python}), run as {who} "
            f"in its home directory")


def describe_access(spec: Spec, paths: Paths) -> list[str]:
    hub = spec.hub
    url = public_url(spec)
    admins = ", ".join(hub.admins) or "none"
    lines = []
    if hub.authenticator == "pam":
        if hub.allow_all:
            who = "every system account on this host with a password"
        else:
            who = "system accounts " + ", ".join(dict.fromkeys([*hub.admins, *hub.allowed_users]))
        lines.append(f"who can log in: {who}, with their own system passwords (PAM), at {url}hub/login")
    elif hub.authenticator == "native":
        lines.append(f"who can log in: accounts signed up at {url}hub/signup and approved by an admin "
                     f"at {url}hub/authorize")
        pre = ", ".join(dict.fromkeys([*hub.admins, *hub.allowed_users]))
        lines.append(f"approved on sign-up: {pre} (sign up with these names first, before anyone else can)")
    else:
        who = "any user name" if hub.allow_all else "user names " + ", ".join(hub.allowed_users)
        lines.append(f"who can log in: {who}, with the shared password (in {shared_password_path(paths)}), "
                     f"at {url}hub/login")
        if hub.admins:
            lines.append(f"admins log in with the admin password in {admin_password_path(paths)} (0600)")
    lines.append(f"admins: {admins}")
    if hub.idle_timeout:
        lines.append(f"idle servers are stopped after {hub.idle_timeout} s (users start them again by logging in)")
    else:
        lines.append("idle servers are never stopped (--idle-timeout 0)")
    return lines


# -- talking to the running hub ---------------------------------------------------------------

def probe_hub_address(spec: Spec) -> str | None:
    """Where the running hub listens (see spawners.hub_address); None: it cannot be running
    (the Docker network it listens on is gone, or the engine is down)."""
    if spec.hub.spawner != "docker":
        return hub_address(spec, SpawnerFacts())
    try:
        return probe_docker_gateway(spec.hub.docker_network)
    except BadInput:
        return None


def _hub_api(spec: Spec, paths: Paths, address: str, method: str, path: str, timeout: float = 10):
    token = (read_bytes(service_token_path(paths)) or b"").decode().strip()
    url = f"http://{address}:{spec.internal.hub_port}{spec.http.base_url}hub/api/{path}"
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    # This host only, and never through a proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=timeout) as res:
        body = res.read()
        return res.status, json.loads(body) if body else None


def apply_stop_user_servers(spec: Spec, paths: Paths, timeout: float = 60) -> list[str]:
    """Stop every user's server through the hub (cleanup_servers is off, so the hub would not).

    Returns the names whose servers were asked to stop. A hub that is not running stops nothing.
    """
    if not spec.internal.hub_port or not service_token_path(paths).exists():
        return []
    address = probe_hub_address(spec)
    if address is None:
        return []
    try:
        _, users = _hub_api(spec, paths, address, "GET", "users?state=active")
    except (OSError, urllib.error.URLError, ValueError):
        return []
    stopping = []
    for user in users or []:
        for name in (user.get("servers") or {}):
            suffix = f"users/{user['name']}/servers/{name}" if name else f"users/{user['name']}/server"
            try:
                _hub_api(spec, paths, address, "DELETE", suffix, timeout=timeout)
                stopping.append(user["name"])
            except (OSError, urllib.error.URLError, ValueError):
                pass
    deadline = time.monotonic() + timeout
    while stopping and time.monotonic() < deadline:
        try:
            _, users = _hub_api(spec, paths, address, "GET", "users?state=active")
        except (OSError, urllib.error.URLError, ValueError):
            break
        if not users:
            break
        time.sleep(0.5)
    return stopping
