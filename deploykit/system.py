"""The system target: the distribution's nginx and supervisor (Debian/Ubuntu), a service user that
Jupyter runs as, a Jupyter environment that user can run, and both daemons started at boot.

The distribution's own files are never written: deploykit adds a site to sites-available (enabled
by a symlink in sites-enabled), snippets in snippets/deploykit/, one main-context file in
modules-enabled/ (the stock nginx.conf includes modules-enabled/*.conf at main level) and
programs in supervisor's conf.d/deploykit-*.conf.

Packages are probed by what they install, under --root (like DESTDIR) for their configuration:
a root without etc/supervisor/supervisord.conf lacks supervisor. That is also how tests show a
missing package without uninstalling anything.

check_* only look and raise BadInput before anything is written; build_* are pure; ensure_* and
apply_* change the host (packages, the service user, the environment, the daemons).
"""

from __future__ import annotations

import configparser
import dataclasses
import fnmatch
import grp
import importlib.metadata
import importlib.util
import os
import pwd
import re
import shutil
import subprocess
import time
from pathlib import Path

from deploykit import fsio
from deploykit import validate as v
from deploykit.desired import DesiredState, DirSpec, FileSpec, jupyter_python, notebook_dir
from deploykit.display import Reporter
from deploykit.errors import BadInput, OperationFailed
from deploykit.host import Host
from deploykit.paths import JUPYTER_READS, Paths, system_paths
from deploykit.render import render_template
from deploykit.spec import Spec

# Debian/Ubuntu package -> what deploykit needs it for (said when it is missing or installed).
PACKAGES = {
    "nginx": "serves Jupyter over HTTPS",
    "supervisor": "keeps Jupyter running and starts it at boot",
    "certbot": "gets the Let's Encrypt certificate",
    "python3-venv": "builds the Jupyter environment from the system Python",
}
SYSTEM_PYTHON = "/usr/bin/python3"
SERVICE_SHELL = "/usr/sbin/nologin"
COMMAND_TIMEOUT = 900  # apt-get and pip download from the network
MIGRATED_MARKER = b"deploykit: nothing to migrate from IPython 3\n"


# -- where ---------------------------------------------------------------------------------------

def jupyter_env_dir(paths: Paths) -> Path:
    """The Jupyter environment deploykit builds when no --python is given (notebook mode)."""
    return paths.root / "opt/deploykit/jupyter"


def default_python(paths: Paths) -> str:
    return str(jupyter_env_dir(paths) / "bin/python")


def supervisor_dropin_path(paths: Paths) -> Path:
    return paths.root / "etc/systemd/system/supervisor.service.d/deploykit.conf"


def with_system_defaults(spec: Spec, paths: Paths) -> Spec:
    """Notebook mode: Jupyter runs from /opt/deploykit/jupyter unless --python named another
    environment. Written into the spec, so every later command uses the same one."""
    if spec.deployment.mode != "notebook" or spec.deployment.python:
        return spec
    return spec.with_values({"deployment": {"python": default_python(paths)}})


def uses_built_env(spec: Spec, paths: Paths) -> bool:
    return spec.deployment.mode == "notebook" and spec.deployment.python in ("", default_python(paths))


# -- the service user ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ServiceAccount:
    name: str
    home: Path
    group: str
    uid: int | None        # None: not created yet

    def environment(self) -> dict[str, str]:
        lab = self.home / ".jupyter" / "lab"
        return {
            "HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
            # JUPYTER_CONFIG_DIR is root's /etc/jupyter: JupyterLab keeps the user's own settings
            # and workspaces (theme, layout) in the home instead of failing to write there.
            "JUPYTERLAB_SETTINGS_DIR": str(lab / "user-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(lab / "workspaces"),
        }


def default_home(paths: Paths, name: str) -> Path:
    return paths.root / "home" / name


def read_service_account(spec: Spec, paths: Paths) -> ServiceAccount:
    """The service user as the system knows it; as deploykit would create it when missing."""
    name = spec.deployment.user
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return ServiceAccount(name, default_home(paths, name), name, None)
    try:
        group = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        group = name
    return ServiceAccount(name, Path(entry.pw_dir), group, entry.pw_uid)


def build_useradd_command(account: ServiceAccount) -> list[str]:
    # A system account with its own group and no password: nobody logs in as it; Jupyter's
    # terminals still give its users a shell (bash, whatever the login shell says).
    return ["useradd", "--system", "--user-group", "--home-dir", str(account.home), "--no-create-home",
            "--shell", SERVICE_SHELL, "--comment", "Jupyter (deploykit)", account.name]


def ensure_service_account(spec: Spec, paths: Paths) -> str:
    account = read_service_account(spec, paths)
    created = account.uid is None
    if created:
        _run(build_useradd_command(account), f"creating the service user {account.name}")
        account = read_service_account(spec, paths)
    if not account.home.exists() and (created or account.home == default_home(paths, account.name)):
        fsio.ensure_dir(account.home, 0o700, owner=account.name)
    verb = "created" if created else "exists"
    return f"{account.name} {verb} (uid {account.uid}, home {account.home})"


# -- packages ------------------------------------------------------------------------------------

def _certbot_available(host: Host) -> bool:
    beside = Path(host.python).parent / "certbot"
    return (os.access(beside, os.X_OK) or importlib.util.find_spec("certbot") is not None
            or shutil.which("certbot") is not None)


def _system_python_makes_venvs() -> bool:
    # Debian's python3 has no ensurepip until python3-venv is installed.
    try:
        res = subprocess.run([SYSTEM_PYTHON, "-c", "import ensurepip, venv"], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0


def probe_env_ready(python: str) -> bool:
    """The environment exists and has Notebook 7 (what `python -m notebook` runs)."""
    if not os.access(python, os.X_OK):
        return False
    try:
        res = subprocess.run([python, "-c", "import notebook.app"], capture_output=True, timeout=120,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0


def probe_missing_packages(spec: Spec, paths: Paths, host: Host) -> list[str]:
    """Packages the deployment needs that are not installed (under paths.root)."""
    missing = []
    if not (host.nginx or shutil.which("nginx")) or not paths.nginx_main_conf.is_file():
        missing.append("nginx")
    # On the real system supervisord is the package's (its unit or init script starts it);
    # under --root deploykit starts one itself, from the package or from its own environment.
    package_daemon = Path("/usr/bin/supervisord").exists() or paths.root != Path("/")
    if not paths.supervisord_conf.is_file() or not package_daemon:
        missing.append("supervisor")
    if spec.tls.mode == "letsencrypt" and not _certbot_available(host):
        missing.append("certbot")
    if uses_built_env(spec, paths) and not probe_env_ready(default_python(paths)) and not _system_python_makes_venvs():
        missing.append("python3-venv")
    return missing


def build_install_command(packages: list[str]) -> list[str]:
    return ["apt-get", "install", "-y", "--no-install-recommends", *packages]


def apply_install_packages(packages: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # A fresh cloud image often has no package lists yet.
    _run(["apt-get", "update"], "apt-get update", env=env)
    _run(build_install_command(packages), "installing " + " ".join(packages), env=env)


# -- the distribution's layout ---------------------------------------------------------------------

def read_nginx_includes(text: str) -> list[tuple[int, str]]:
    """(block depth, argument) of every include in an nginx config, comments left out."""
    out = []
    depth = 0
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for token in re.findall(r"include\s+[^;{}\s]+\s*;|[{}]", line):
            if token == "{":
                depth += 1
            elif token == "}":
                depth -= 1
            else:
                out.append((depth, token.split()[1].rstrip(";")))
    return out


def _includes(includes: list[tuple[int, str]], depth: int, target: Path, prefix: Path) -> bool:
    for d, pattern in includes:
        if d != depth:
            continue
        full = Path(pattern) if pattern.startswith("/") else prefix / pattern
        if os.path.realpath(full.parent) == os.path.realpath(target.parent) and fnmatch.fnmatch(target.name, full.name):
            return True
    return False


def check_nginx_layout(paths: Paths) -> None:
    """The main nginx.conf must load sites-enabled/* (http level) and modules-enabled/*.conf
    (main level), as Debian's and Ubuntu's do; deploykit never edits it."""
    conf = paths.nginx_main_conf
    try:
        includes = read_nginx_includes(conf.read_text())
    except OSError as exc:
        raise BadInput(str(conf), "", f"cannot be read: {exc}") from None
    if not _includes(includes, 1, paths.nginx_site_link, paths.nginx_prefix):
        raise BadInput(str(conf), "", f"does not include {paths.nginx_site_link.parent}/* in its http block, so "
                                      "deploykit's site would not load; the system target needs Debian's or "
                                      "Ubuntu's nginx layout (use --target local with another nginx)")
    if not _includes(includes, 0, paths.nginx_main_snippet, paths.nginx_prefix):
        raise BadInput(str(conf), "", f"does not include {paths.nginx_main_snippet.parent}/*.conf at main level; "
                                      "the system target needs Debian's or Ubuntu's nginx layout")


def check_supervisor_layout(paths: Paths) -> None:
    """supervisord.conf must serve on the socket deploykit talks to and include conf.d/*.conf."""
    conf = paths.supervisord_conf
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",), strict=False)
    try:
        parser.read_string(conf.read_text(), str(conf))
    except (OSError, configparser.Error) as exc:
        raise BadInput(str(conf), "", f"cannot be read: {exc}") from None
    socket = parser.get("unix_http_server", "file", fallback="")
    if not socket or os.path.realpath(socket) != os.path.realpath(paths.supervisor_socket):
        raise BadInput(str(conf), socket, f"supervisord listens elsewhere than {paths.supervisor_socket}; the "
                                          "system target needs Debian's or Ubuntu's supervisor layout")
    patterns = parser.get("include", "files", fallback="").split()
    probe = paths.program_conf("jupyter")
    for pattern in patterns:
        full = Path(pattern) if pattern.startswith("/") else conf.parent / pattern
        if os.path.realpath(full.parent) == os.path.realpath(probe.parent) and fnmatch.fnmatch(probe.name, full.name):
            return
    raise BadInput(str(conf), "", f"does not include {paths.supervisor_programs}/*.conf, so deploykit's "
                                  "programs would not load; the system target needs Debian's or Ubuntu's layout")


def _check_python_for_user(python: str, account: ServiceAccount) -> None:
    from deploykit.kernels import unreachable_for_others

    for candidate in dict.fromkeys([python, os.path.realpath(python)]):
        blocked = unreachable_for_others(candidate)
        if blocked:
            raise BadInput("--python", python, f"the service user {account.name} cannot run it ({blocked} is closed "
                                               "to other users); use an environment outside /root, e.g. "
                                               "/usr/bin/python3 -m venv /opt/jupyter")
    if not probe_env_ready(python):
        raise BadInput("--python", python,
                       f"has no Jupyter Notebook 7; install it with: {python} -m pip install notebook")


def check_system_target(spec: Spec, host: Host, opts: dict) -> None:
    """Everything the system target needs, checked before anything is written (BadInput, exit 2)."""
    root = Path(opts.get("root") or "/")
    paths = system_paths(root)
    install = bool(opts.get("install_missing"))
    notebook = spec.deployment.mode == "notebook"
    if not host.is_root:
        raise BadInput("--target", "system", "needs root (it writes to /etc and creates the service user): "
                                             "run it with sudo, or use --target local")
    if notebook and spec.deployment.user == "root":
        raise BadInput("--user", "root", "Jupyter must not run as root; name a service user (default jupyter)")
    if install and root != Path("/"):
        raise BadInput("--install-missing", str(root), "packages cannot be installed under --root; install them "
                                                       "on the host, or lay their files under the root")
    missing = probe_missing_packages(spec, paths, host)
    if missing and not install:
        needs = "; ".join(f"{p} {PACKAGES[p]}" for p in missing)
        raise BadInput("package", " ".join(missing), f"not installed ({needs}); install with "
                                                     f"`apt-get install -y {' '.join(missing)}`, or run again "
                                                     "with --install-missing")
    if missing and not shutil.which("apt-get"):
        raise BadInput("--install-missing", " ".join(missing), "no apt-get here: deploykit installs packages on "
                                                              "Debian and Ubuntu only; install them yourself")
    if "nginx" not in missing:
        check_nginx_layout(paths)
    if "supervisor" not in missing:
        check_supervisor_layout(paths)
    if notebook:
        account = read_service_account(spec, paths)
        try:
            v.abs_path(str(account.home))
        except v.Invalid as exc:
            raise BadInput("--user", account.name, f"its home {str(account.home)!r} cannot be used: {exc}") from None
        if not uses_built_env(spec, paths):
            _check_python_for_user(spec.deployment.python, account)


# -- the Jupyter environment -------------------------------------------------------------------------

def build_env_commands(env_dir: Path) -> list[list[str]]:
    try:
        # The Notebook deploykit was released and tested with.
        requirement = f"notebook=={importlib.metadata.version('notebook')}"
    except importlib.metadata.PackageNotFoundError:
        requirement = "notebook>=7"
    python = str(env_dir / "bin/python")
    return [[SYSTEM_PYTHON, "-m", "venv", str(env_dir)],
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", requirement]]


def ensure_jupyter_env(paths: Paths) -> str:
    env_dir = jupyter_env_dir(paths)
    python = default_python(paths)
    if probe_env_ready(python):
        return f"{env_dir} ready"
    apply_make_public_dirs(env_dir.parent)
    for argv in build_env_commands(env_dir):
        # umask 022: the service user (and nginx, for JupyterLab's static files) must read it all.
        _run(argv, f"building the Jupyter environment {env_dir}", umask=0o022)
    if not probe_env_ready(python):
        raise OperationFailed(f"the Jupyter environment {env_dir} was built but cannot import notebook")
    return f"built {env_dir} from {SYSTEM_PYTHON} ({build_env_commands(env_dir)[-1][-1]})"


# -- the daemons ---------------------------------------------------------------------------------

def build_service_commands(service: str, systemd: bool) -> tuple[list[list[str]], list[list[str]]]:
    """(start now, start at boot) for a distribution service: systemctl when systemd is PID 1,
    else its init script through `service`, and update-rc.d (which also enables the systemd unit,
    should the machine boot with systemd later)."""
    if systemd:
        unit = f"{service}.service"
        return [["systemctl", "start", unit]], [["systemctl", "enable", "--quiet", unit]]
    return [["service", service, "start"]], [["update-rc.d", service, "defaults"], ["update-rc.d", service, "enable"]]


def _manager(host: Host) -> str:
    return "systemctl" if host.systemd else "the init script (service, update-rc.d)"


def ensure_supervisord(paths: Paths, host: Host) -> str:
    from deploykit.supervisor import Supervisor

    sup = Supervisor(paths, host.python)
    if paths.root != Path("/"):
        # --root: nothing of the host's init system is touched; deploykit plays the init script.
        if sup.probe_running():
            return "running (--root: not enabled at boot)"
        sup.apply_start()
        return f"started supervisord -c {paths.supervisord_conf} (--root: not enabled at boot)"
    start, enable = build_service_commands("supervisor", host.systemd)
    said = "running"
    if not sup.probe_running():
        for argv in start:
            _run(argv, "starting supervisor")
        _wait(sup.probe_running, 30, f"supervisord to answer on {paths.supervisor_socket}")
        said = "started"
    for argv in enable:
        _run(argv, "enabling supervisor at boot")
    return f"{said}, enabled at boot ({_manager(host)})"


def ensure_nginx(paths: Paths, host: Host) -> str:
    from deploykit.nginx import Nginx

    if paths.root != Path("/"):
        return "started by the apply (--root: not enabled at boot)"
    nginx = Nginx(paths, host.nginx)
    start, enable = build_service_commands("nginx", host.systemd)
    said = "running"
    if nginx.probe_pid() is None:
        for argv in start:
            _run(argv, "starting nginx")
        _wait(lambda: nginx.probe_pid() is not None, 30, f"nginx to write {paths.nginx_pid}")
        said = "started"
    for argv in enable:
        _run(argv, "enabling nginx at boot")
    return f"{said}, enabled at boot ({_manager(host)})"


def apply_make_public_dirs(path: Path) -> None:
    """mkdir -p with every missing directory 0755 (deploykit's umask would make them 0700);
    existing ones are never changed."""
    for d in [*reversed(path.parents), path]:
        if not d.exists():
            d.mkdir()
            os.chmod(d, 0o755)


def ensure_base_dirs(paths: Paths) -> None:
    """The distribution's own directories that other users walk through (www-data, the service
    user), in case a minimal system lacks one."""
    for rel in ("etc", "home", "opt", "srv", "var/lib", "var/log", "var/www", "run"):
        apply_make_public_dirs(paths.root / rel)


def ensure_system_prerequisites(spec: Spec, paths: Paths, host: Host, opts: dict, reporter: Reporter) -> None:
    if opts.get("install_missing"):
        missing = probe_missing_packages(spec, paths, host)
        if missing:
            with reporter.step("packages") as out:
                reporter.always(f"  installing with apt-get: {', '.join(missing)}")
                apply_install_packages(missing)
                out["text"] = "installed " + ", ".join(missing)
    ensure_base_dirs(paths)
    if spec.deployment.mode == "notebook":
        with reporter.step("user") as out:
            out["text"] = ensure_service_account(spec, paths)
    if uses_built_env(spec, paths):
        with reporter.step("jupyter") as out:
            out["text"] = ensure_jupyter_env(paths)
    if host.systemd and paths.root == Path("/"):
        # Picks up a changed drop-in (supervisor_dropin_path) from the previous apply.
        _run(["systemctl", "daemon-reload"], "reloading systemd's units")
    with reporter.step("supervisor") as out:
        out["text"] = ensure_supervisord(paths, host)
    with reporter.step("nginx") as out:
        out["text"] = ensure_nginx(paths, host)


def stop_system_programs(spec: Spec, paths: Paths, engine) -> str:
    """Stop deploykit's programs; supervisord and nginx stay up (they serve others too)."""
    import xmlrpc.client

    from deploykit.record import read_record

    sup = engine.supervisor
    if not sup.probe_running():
        return "supervisord is not running"
    names = read_record(paths.record).get("programs") or ["jupyter"]
    known = sup.probe_programs()
    stopped = []
    for name in names:
        if name not in known:
            continue
        try:
            sup.rpc().supervisor.stopProcessGroup(name)
        except xmlrpc.client.Fault as exc:
            if "NOT_RUNNING" not in exc.faultString and "BAD_NAME" not in exc.faultString:
                raise OperationFailed(f"supervisor could not stop {name}: {exc.faultString}") from None
        stopped.append(name)
    what = "stopped " + ", ".join(stopped) if stopped else "no program of this deployment was loaded"
    return f"{what}; supervisord left running (it serves other programs too)"


# -- the desired state, system target ---------------------------------------------------------------

def render_supervisor_dropin(mounts: list[str]) -> bytes:
    return render_template("systemd/supervisor-dropin.conf.j2", mounts=mounts).encode()


def build_dropin_mounts(spec: Spec, paths: Paths, host: Host, account: ServiceAccount | None) -> list[str]:
    env_prefix = Path(jupyter_python(spec, host)).parent.parent
    wanted = [env_prefix]
    if account is not None:
        wanted += [Path(notebook_dir(spec, paths)), account.home]
    else:
        wanted.append(paths.root / "home")
    return [str(p) for p in dict.fromkeys(wanted)]


def build_system_state(desired: DesiredState, spec: Spec, paths: Paths, host: Host,
                       account: ServiceAccount | None) -> DesiredState:
    """Owners and modes for a server where Jupyter runs as the service user and nginx's workers as
    www-data, and (with systemd) the drop-in that orders supervisord after Jupyter's mounts."""
    account = account if spec.deployment.mode == "notebook" else None
    # nginx's workers read the pages and challenges, the service user reads /etc/jupyter.
    pages = [f.path.parent for f in desired.files if f.kind == "page"]
    readable = {paths.nginx_error_page_dir, paths.acme_webroot, paths.jupyter_config_dir, paths.nginx_snippets, *pages}
    users: dict[Path, int] = {}
    if account is not None:
        # 0o1700: jupyter_client sets the sticky bit on the runtime dir with a kernel's
        # connection file; the same mode here keeps each apply from undoing it.
        users = {paths.jupyter_data_dir: 0o755, paths.jupyter_runtime_dir: 0o1700,
                 Path(notebook_dir(spec, paths)): 0o700}
    dirs: list[DirSpec] = []
    for d in desired.dirs:
        if account is not None and d.path == paths.jupyter_data_dir:
            dirs.append(DirSpec(d.path.parent, 0o755))
        if d.path in users:
            d = dataclasses.replace(d, mode=users[d.path], owner=account.name)
        elif d.path in readable:
            d = dataclasses.replace(d, mode=0o755)
        dirs.append(d)
    # Files' parents that are not deploykit's own dirs would be made 0700 (umask) on write.
    dirs += [DirSpec(p, 0o755) for p in dict.fromkeys(pages) if p not in {d.path for d in dirs}]
    files = []
    # Jupyter reads these as the service user; root keeps them, so Jupyter cannot change them.
    shared = {paths.jupyter_config_dir / "jupyter_server_config.py", *(paths.secret(n) for n in JUPYTER_READS)}
    for f in desired.files:
        if account is not None and f.path in shared:
            f = dataclasses.replace(f, mode=0o640, group=account.group)
        files.append(f)
    if account is not None:
        # Jupyter's one-off IPython 3 migration writes this marker into JUPYTER_CONFIG_DIR once
        # ~/.ipython exists (the first kernel makes it) and crashes at the next start when it
        # cannot: there is nothing to migrate, and a present, read-only marker says so.
        files.append(FileSpec(paths.jupyter_config_dir / "migrated", MIGRATED_MARKER))
    if host.systemd:
        files.append(FileSpec(supervisor_dropin_path(paths),
                              render_supervisor_dropin(build_dropin_mounts(spec, paths, host, account))))
    return dataclasses.replace(desired, files=tuple(files), dirs=tuple(dirs))


# -- helpers ---------------------------------------------------------------------------------------

def _run(argv: list[str], what: str, env: dict | None = None, umask: int = -1) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=env,
                             stdin=subprocess.DEVNULL, umask=umask)
    except (OSError, subprocess.SubprocessError) as exc:
        raise OperationFailed(f"{what} failed: {' '.join(argv)}: {exc}") from None
    if res.returncode != 0:
        said = (res.stderr or res.stdout).strip().splitlines()[-5:]
        raise OperationFailed(f"{what} failed ({' '.join(argv)} exited {res.returncode}): " + " | ".join(said))
    return res


def _wait(ok, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(0.1)
    raise OperationFailed(f"gave up after {timeout:.0f} s waiting for {what}")
