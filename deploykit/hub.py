"""JupyterHub mode: hub config, the proxy as its own program, secrets, access checks.

nginx (TLS, base URL) -> configurable-http-proxy (supervisor program, loopback) -> the hub or a
user's server. The hub (supervisor program, root in the local target so it can check PAM
passwords and start servers as each user) never starts the proxy; both share an auth token
made once and kept in a 0600 file. Rendering here is pure; check_* only look; secrets are
made here but written by apply like every other file.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pwd
import re
import shutil
import stat
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from deploykit import passwords
from deploykit.desired import DesiredState, FileSpec, Program, jupyter_python, public_url
from deploykit.errors import BadInput
from deploykit.materials import read_bytes
from deploykit.paths import Paths
from deploykit.render import render_program, render_template
from deploykit.spec import Spec

# JupyterHub's SharedPasswordAuthenticator refuses shorter ones (it checks at hub start).
SHARED_PASSWORD_MIN = 8
ADMIN_PASSWORD_BYTES = 24          # token_urlsafe -> 32 characters, its admin minimum
NATIVE_MIN_PASSWORD = 8
MIN_IDLE_TIMEOUT = 10              # shorter would cull servers while they are being used
AUTHENTICATOR_CLASSES = {"pam": "pam", "native": "deploykit.nativeauth.NativeAuthenticator",
                         "shared-password": "shared-password"}
CHP_USER = "nobody"
# Hub names that make a valid jupyter-<name> account (system names: at most 32 characters).
ACCOUNT_NAME_PATTERN = r"^[a-z0-9_][a-z0-9_-]{0,23}$"


# -- paths ------------------------------------------------------------------------------------

def config_path(paths: Paths) -> Path:
    return paths.hub_dir / "jupyterhub_config.py"


def data_dir(paths: Paths) -> Path:
    return paths.state_dir / "jupyterhub"


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
                   shared_password_given: bool = False) -> None:
    """Refuse a hub nobody could use; shared by provision (before anything is written) and reload."""
    hub = spec.hub
    root = os.geteuid() == 0 if running_as_root is None else running_as_root
    if hub.spawner != "localprocess":
        if importlib.util.find_spec("deploykit.spawners") is None:
            raise BadInput("--spawner", hub.spawner, "not available yet; use --spawner localprocess")
    elif hub.mem_limit or hub.cpu_limit:
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
    if hub.authenticator == "pam" and hub.spawner == "localprocess":
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


def user_environment(spec: Spec, paths: Paths, host) -> dict[str, str]:
    python = jupyter_python(spec, host)
    env = {"PATH": host.program_path(python)}
    jupyter_path = user_jupyter_path(spec, paths)
    if jupyter_path:
        env["JUPYTER_PATH"] = ":".join(jupyter_path)
    if activity_interval(spec) != 300:
        env["JUPYTERHUB_ACTIVITY_INTERVAL"] = str(activity_interval(spec))
    return env


def render_hub_config(spec: Spec, paths: Paths, host) -> str:
    hub, internal, base = spec.hub, spec.internal, spec.http.base_url
    python = jupyter_python(spec, host)
    spawner_config = ""
    if hub.spawner != "localprocess":
        try:
            from deploykit.spawners import render_spawner_config
        except ModuleNotFoundError:
            raise BadInput("--spawner", hub.spawner, "not available yet; use --spawner localprocess") from None
        spawner_config = render_spawner_config(spec, paths, host)
    culler = [host.python, "-m", "jupyterhub_idle_culler", f"--timeout={hub.idle_timeout}",
              f"--cull-every={cull_every(spec)}"]
    return render_template(
        "jupyterhub/jupyterhub_config.py.j2", domain=spec.deployment.domain,
        data_dir=str(data_dir(paths)), db_path=str(data_dir(paths) / "jupyterhub.sqlite"),
        cookie_secret_file=str(cookie_secret_path(paths)),
        bind_url=f"http://127.0.0.1:{internal.proxy_port}{base}",
        hub_bind_url=f"http://127.0.0.1:{internal.hub_port}",
        proxy_api_url=f"http://127.0.0.1:{internal.proxy_api_port}",
        proxy_token_file=str(proxy_token_path(paths)), service_token_file=str(service_token_path(paths)),
        activity_interval=activity_interval(spec),
        authenticator=hub.authenticator, authenticator_class=AUTHENTICATOR_CLASSES[hub.authenticator],
        # Admins are listed as allowed too: JupyterHub lets in only allowed names otherwise.
        admins=sorted(hub.admins), allowed_users=sorted({*hub.admins, *hub.allowed_users}),
        # Native: its own sign-up approval is the gate, so JupyterHub lets every approved user in.
        allow_all=bool(hub.allow_all or hub.authenticator == "native"),
        native_min_password=NATIVE_MIN_PASSWORD,
        shared_password_file=str(shared_password_path(paths)),
        admin_password_file=str(admin_password_path(paths)) if admin_password_wanted(spec) else "",
        idle_timeout=hub.idle_timeout, culler_command=culler,
        default_url=hub.default_url, spawner=hub.spawner, account_spawner=uses_accounts(spec),
        account_name_pattern=ACCOUNT_NAME_PATTERN,
        user_env_prefix=str(Path(python).parent.parent),
        singleuser_cmd=[python, "-m", "jupyterhub.singleuser"],
        user_environment=user_environment(spec, paths, host),
        spawner_config=spawner_config,
    )


def build_hub_files(spec: Spec, paths: Paths, host, materials) -> tuple[list[FileSpec], list[Program], int, str]:
    internal, base = spec.internal, spec.http.base_url
    config = config_path(paths)
    files = [FileSpec(config, render_hub_config(spec, paths, host).encode(), mode=0o600)]
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
    if host.is_root:
        chp_cmd += ["--user", CHP_USER]
    chp_cmd += ["--", "--ip", "127.0.0.1", "--port", str(internal.proxy_port),
                "--api-ip", "127.0.0.1", "--api-port", str(internal.proxy_api_port),
                "--default-target", f"http://127.0.0.1:{internal.hub_port}",
                "--error-target", f"http://127.0.0.1:{internal.hub_port}{base}hub/error",
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

def _hub_api(spec: Spec, paths: Paths, method: str, path: str, timeout: float = 10):
    token = (read_bytes(service_token_path(paths)) or b"").decode().strip()
    url = f"http://127.0.0.1:{spec.internal.hub_port}{spec.http.base_url}hub/api/{path}"
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    # Loopback only and never through a proxy from the environment.
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
    try:
        _, users = _hub_api(spec, paths, "GET", "users?state=active")
    except (OSError, urllib.error.URLError, ValueError):
        return []
    stopping = []
    for user in users or []:
        for name in (user.get("servers") or {}):
            suffix = f"users/{user['name']}/servers/{name}" if name else f"users/{user['name']}/server"
            try:
                _hub_api(spec, paths, "DELETE", suffix, timeout=timeout)
                stopping.append(user["name"])
            except (OSError, urllib.error.URLError, ValueError):
                pass
    deadline = time.monotonic() + timeout
    while stopping and time.monotonic() < deadline:
        try:
            _, users = _hub_api(spec, paths, "GET", "users?state=active")
        except (OSError, urllib.error.URLError, ValueError):
            break
        if not users:
            break
        time.sleep(0.5)
    return stopping
