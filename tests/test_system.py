"""Issue: the system target, on the real stack, laid under --root.

The root holds Debian's own configuration files, unmodified except that their absolute paths
are moved under the root (rebase() below, done by this test, never by deploykit): the stock
nginx.conf of nginx-common (checked against dpkg's md5 of the conffile) and the stock
supervisord.conf of supervisor. The real nginx (`nginx -p ROOT/etc/nginx/ -c ...`) and the
package's supervisord (`supervisord -c ROOT/etc/supervisor/supervisord.conf`, as its init script
runs it) serve the deployment; Jupyter runs as a real service user, made by deploykit with
useradd under a unique name and removed (userdel) afterwards. Another site on the same HTTPS
port and another supervisor program stand for a server that runs more than Jupyter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import tempfile
import uuid
import warnings
from pathlib import Path

import pytest
from support import (PASSWORD, ROOT, Deployment, dk, execute, free_ports, kill_leftovers, login, start_kernel,
                     tree_snapshot, wait_until)

pytestmark = pytest.mark.real

# Runnable by other users (scripts/install-deps makes it world-readable), unlike a pyenv build.
JUPYTER_PYTHON = str(ROOT / ".venv" / "bin" / "python")
NGINX_STOCK = ("nginx-common", Path("/etc/nginx/nginx.conf"), ("/etc/nginx/", "/var/log/nginx/", "/run/nginx.pid"))
SUPERVISOR_STOCK = ("supervisor", Path("/etc/supervisor/supervisord.conf"),
                    ("/etc/supervisor/", "/var/log/supervisor", "/var/run/"))
SKELETON = ("etc/nginx/conf.d", "etc/nginx/sites-available", "etc/nginx/sites-enabled", "etc/nginx/snippets",
            "etc/nginx/modules-available", "etc/nginx/modules-enabled", "etc/supervisor/conf.d", "etc/ssl",
            "var/log/nginx", "var/log/supervisor", "var/lib", "var/www", "run", "srv", "opt", "home")


# -- a Debian server under a directory ---------------------------------------------------------

def conffile_md5(package: str, path: Path) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Conffiles}\n", package], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == str(path):
            return parts[1]
    raise AssertionError(f"{path} is not a conffile of {package}")


def stock_text(package: str, path: Path) -> str:
    """The distribution's file as the package shipped it (dpkg's md5), or the test fails."""
    data = path.read_bytes()
    assert hashlib.md5(data).hexdigest() == conffile_md5(package, path), \
        f"{path} differs from {package}'s conffile: the test needs the unmodified stock file"
    return data.decode()


def rebase(text: str, root: Path, prefixes: tuple[str, ...]) -> str:
    """The one change made to a stock file: its absolute paths moved under root."""
    for prefix in prefixes:
        text = text.replace(prefix, f"{root}{prefix}")
    for line in text.splitlines():
        directive = line.split("#", 1)[0].split(";", 1)[0] if not line.lstrip().startswith(";") else ""
        for path in re.findall(r"(?:^|[\s=])(/[^\s;]*)", directive):
            assert path.startswith(f"{root}/") or path.startswith("unix://"), f"left outside the root: {line}"
    return text


def make_system_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="dk-sysroot-", dir="/tmp"))
    # www-data (nginx's workers) and the service user walk through it, as through /.
    os.chmod(root, 0o755)
    for rel in SKELETON:
        path = root
        for part in Path(rel).parts:
            path = path / part
            path.mkdir(exist_ok=True)
            os.chmod(path, 0o755)
    (root / "var/run").symlink_to("../run")  # as on Debian
    shutil.copy("/etc/nginx/mime.types", root / "etc/nginx/mime.types")
    for package, path, prefixes in (NGINX_STOCK, SUPERVISOR_STOCK):
        target = root / path.relative_to("/")
        target.write_text(rebase(stock_text(package, path), root, prefixes))
        os.chmod(target, 0o644)
    return root


def add_other_site(root: Path, https_port: int) -> None:
    """Another site on the deployment's HTTPS port, loaded first (000-), with the stock TLS settings."""
    from deploykit.certs import make_self_signed

    cert, key = make_self_signed("other.test")
    (root / "etc/ssl/other-cert.pem").write_bytes(cert)
    (root / "etc/ssl/other-key.pem").write_bytes(key)
    site = root / "etc/nginx/sites-available/000-other"
    site.write_text(f"server {{\n    listen {https_port} ssl http2;\n    server_name other.test;\n"
                    f"    ssl_certificate {root}/etc/ssl/other-cert.pem;\n"
                    f"    ssl_certificate_key {root}/etc/ssl/other-key.pem;\n"
                    f"    return 200 \"other site\\n\";\n}}\n")
    (root / "etc/nginx/sites-enabled/000-other").symlink_to(site)


def add_other_program(root: Path, seconds: int = 3600) -> None:
    (root / "etc/supervisor/conf.d/other.conf").write_text(
        f"[program:other]\ncommand=/bin/sleep {seconds}\nautostart=true\n")


def uid_of(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def process_uids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


def kill_user_processes(uid: int) -> None:
    for pid_dir in Path("/proc").iterdir():
        if pid_dir.name.isdigit():
            try:
                if process_uids(int(pid_dir.name))[0] == uid:
                    os.kill(int(pid_dir.name), signal.SIGKILL)
            except (OSError, AssertionError):
                pass


def tear_down_root(root: Path, user: str | None) -> None:
    """Stop what the root's daemons run (as an init system would at shutdown), the test's service
    user (a unique name made for this test) and the root itself."""
    from deploykit.nginx import Nginx
    from deploykit.paths import system_paths
    from deploykit.supervisor import Supervisor

    paths = system_paths(root)
    try:
        Supervisor(paths).apply_shutdown()
        Nginx(paths, "nginx").apply_stop()
    finally:
        kill_leftovers(root)
        uid = uid_of(user) if user else None
        if uid is not None:
            kill_user_processes(uid)
            subprocess.run(["userdel", user], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def unique_user() -> str:
    return "dk-" + uuid.uuid4().hex[:10]


@dataclasses.dataclass
class SystemDeployment(Deployment):
    root: Path = Path("/")
    user: str = ""

    def dk(self, *args, **kwargs):
        # The state dir is ROOT/var/lib/deploykit: --root alone finds it.
        return dk(*args, "--root", self.root, **kwargs)

    @property
    def paths(self):
        from deploykit.paths import system_paths

        return system_paths(self.root)


def provision_system(root: Path, user: str, extra=(), python: str | None = JUPYTER_PYTHON,
                     timeout: float = 300) -> tuple[SystemDeployment, subprocess.CompletedProcess]:
    http_port, https_port, jupyter_port = free_ports(3)
    add_other_site(root, https_port)
    add_other_program(root)
    # Jupyter's loopback port is picked at random here: the usual 8888 is what every parallel
    # test deployment on this machine tries first.
    state = root / "var/lib/deploykit"
    state.mkdir(mode=0o700)
    (state / "deploykit.toml").write_text(
        f'[deployment]\ndomain = "jupyter.test"\ntarget = "system"\n\n[internal]\njupyter_port = {jupyter_port}\n')
    res = dk("provision", "--target", "system", "--root", root, "--domain", "jupyter.test",
             "--http-port", http_port, "--https-port", https_port, "--user", user,
             *(["--python", python] if python else []), "--password-stdin", *extra,
             input=PASSWORD + "\n", timeout=timeout)
    dep = SystemDeployment(root / "var/lib/deploykit", "jupyter.test", http_port, https_port, root=root, user=user)
    return dep, res


@pytest.fixture(scope="module")
def system():
    root, user = make_system_root(), unique_user()
    try:
        dep, res = provision_system(root, user)
        assert res.returncode == 0, f"provision failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
        dep.provision_output = res.stdout
        yield dep
    finally:
        tear_down_root(root, user)


# -- the distribution's files, nginx and TLS --------------------------------------------------------

def test_layout_is_debians_and_the_stock_files_are_untouched(system):
    root, paths = system.root, system.paths
    for package, path, prefixes in (NGINX_STOCK, SUPERVISOR_STOCK):
        copy = root / path.relative_to("/")
        assert copy.read_text() == rebase(stock_text(package, path), root, prefixes), f"deploykit edited {copy}"
    site = root / "etc/nginx/sites-available/deploykit.conf"
    link = root / "etc/nginx/sites-enabled/deploykit.conf"
    assert site.is_file() and link.is_symlink() and Path(os.readlink(link)) == site
    assert {"proxy.conf", "ssl.conf"} <= {p.name for p in (root / "etc/nginx/snippets/deploykit").iterdir()}
    main = root / "etc/nginx/modules-enabled/90-deploykit-main.conf"
    assert "worker_shutdown_timeout" in main.read_text()
    assert (root / "etc/supervisor/conf.d/deploykit-jupyter.conf").is_file()
    assert (root / "etc/jupyter/jupyter_server_config.py").is_file()
    assert (root / "var/lib/deploykit/deploykit.toml").is_file()
    assert (root / "var/log/deploykit/jupyter.log").is_file()
    # Nothing of deploykit's went into the distribution's own files or the host's.
    assert paths.state_dir == root / "var/lib/deploykit"
    record = json.loads((root / "var/lib/deploykit/files.json").read_text())
    assert all(f["path"].startswith(f"{root}/") for f in record["files"] + record["links"] + record["dirs"])


def test_nginx_t_passes_with_the_stock_config(system):
    root = system.root
    argv = ["nginx", "-p", f"{root}/etc/nginx/", "-c", f"{root}/etc/nginx/nginx.conf",
            "-e", f"{root}/var/log/nginx/error.log"]
    res = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    dump = subprocess.run([*argv, "-T"], capture_output=True, text=True, timeout=60).stdout
    # The main-context file is read at main level (through the stock modules-enabled include),
    # and the stock http-level TLS settings are still there, overridden in our server block.
    assert f"# configuration file {root}/etc/nginx/modules-enabled/90-deploykit-main.conf:" in dump
    assert "ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;" in dump
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in dump


def _handshake(port: int, name: str, version: ssl.TLSVersion, cafile: Path | None = None) -> str:
    import socket

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # SECLEVEL=0 lets this client offer the old protocols at all; the server must refuse them.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = version
    try:
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=name) as s:
            return f"accepted {s.version()}"
    except ssl.SSLError as exc:
        return exc.reason or str(exc)


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
@pytest.mark.parametrize("name", ["jupyter.test", "other.test"])
def test_tls_1_0_and_1_1_are_refused_as_protocols(system, version, name):
    """Another site's server comes first on the port and inherits the stock "ssl_protocols TLSv1
    TLSv1.1 ...": were it the port's default server, TLS 1.0/1.1 would be negotiated before SNI
    (the handshake then fails on ciphers, not on the protocol). deploykit's server is the default
    server of its HTTPS port, so the protocol itself is refused, for every name on it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tls_version = getattr(ssl.TLSVersion, version)
    assert _handshake(system.https_port, name, tls_version) == "TLSV1_ALERT_PROTOCOL_VERSION"


def test_tls_1_2_and_1_3_work_and_the_other_site_still_answers(system):
    assert _handshake(system.https_port, "jupyter.test", ssl.TLSVersion.TLSv1_2) == "accepted TLSv1.2"
    assert _handshake(system.https_port, "jupyter.test", ssl.TLSVersion.TLSv1_3) == "accepted TLSv1.3"
    import requests

    s = requests.Session()
    s.trust_env = False
    res = s.get(f"https://other.test:{system.https_port}/", verify=str(system.root / "etc/ssl/other-cert.pem"),
                timeout=10)
    assert res.status_code == 200 and res.text == "other site\n"


# -- Jupyter through nginx ------------------------------------------------------------------------

def test_https_api_and_redirect(system):
    s = system.session()
    res = s.get(system.url("api"))
    assert res.status_code == 200 and res.json()["version"]
    assert res.headers["server"] == "nginx"
    assert res.headers["strict-transport-security"].startswith("max-age=")
    res = s.get(f"http://jupyter.test:{system.http_port}/lab?x=1", allow_redirects=False)
    assert res.status_code == 301
    assert res.headers["location"] == f"https://jupyter.test:{system.https_port}/lab?x=1"


def test_login_and_kernel_over_wss(system):
    s, res = login(system)
    assert res.status_code == 302, res.text[:300]
    _, bad = login(system, password="wrong-password")
    assert bad.status_code in (200, 401)
    kernel = start_kernel(s, system)
    assert execute(s, system, kernel, "import os; os.getuid()") == str(uid_of(system.user))


def test_supervisor_restarts_jupyter_after_kill_9(system):
    pid = system.program_pid("jupyter")
    assert pid
    os.kill(pid, signal.SIGKILL)
    new_pid = wait_until(lambda: (p := system.program_pid("jupyter")) not in (None, 0, pid)
                         and system.status()["healthy"] and p, timeout=90, what="jupyter to come back")
    assert process_uids(new_pid) == [uid_of(system.user)] * 4
    s, res = login(system)
    assert res.status_code == 302
    assert execute(s, system, start_kernel(s, system), "6*7") == "42"


def test_smoke_script_passes_against_the_system_deployment(system):
    res = subprocess.run(["/usr/bin/python3", str(ROOT / "scripts/smoke"), "--root", str(system.root),
                          "--deploykit", f"{sys.executable} -m deploykit", "--password-stdin"],
                         input=PASSWORD + "\n", capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok   old TLS  refused: TLSv1 (TLSV1_ALERT_PROTOCOL_VERSION)" in res.stdout


def test_unavailable_page_is_readable_by_nginx_workers(system):
    page = system.paths.nginx_error_page_dir / "deploykit-errors" / "unavailable.html"
    res = subprocess.run(["runuser", "-u", "www-data", "--", "cat", str(page)], capture_output=True, timeout=30)
    assert res.returncode == 0 and b"Jupyter" in res.stdout, res.stderr


# -- the service user ------------------------------------------------------------------------------

def test_service_user_was_created_and_jupyter_runs_as_it(system):
    entry = pwd.getpwnam(system.user)
    assert entry.pw_uid < 1000, "a system account"
    assert entry.pw_shell == "/usr/sbin/nologin"
    assert entry.pw_dir == str(system.root / "home" / system.user)
    assert f"{system.user} created (uid {entry.pw_uid}" in system.provision_output
    pid = system.program_pid("jupyter")
    assert process_uids(pid) == [entry.pw_uid] * 4, "Jupyter must not run as root"
    conf = (system.root / "etc/supervisor/conf.d/deploykit-jupyter.conf").read_text()
    assert f"\nuser={system.user}\n" in conf
    assert f'HOME="{entry.pw_dir}"' in conf


def _owner(path: Path) -> tuple[str, str, int]:
    import grp

    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)


def test_owners_and_modes(system):
    root, user = system.root, system.user
    expected = {
        "srv/jupyter": (user, user, 0o700),                               # the notebook dir is the user's
        "home/" + user: (user, user, 0o700),
        "var/lib/jupyter/data": (user, user, 0o755),                      # nbsignatures.db, kernelspecs
        "var/lib/jupyter/runtime": (user, user, 0o1700),                  # kernel connection files
        "etc/jupyter": ("root", "root", 0o755),
        "etc/jupyter/jupyter_server_config.py": ("root", user, 0o640),    # root's, readable by
        "etc/jupyter/notebook-password.hash": ("root", user, 0o640),      # Jupyter (the user's group)
        "etc/jupyter/jupyter-cookie-secret": ("root", user, 0o640),       # and nobody else
        "etc/supervisor/conf.d/deploykit-jupyter.conf": ("root", "root", 0o644),
        "etc/nginx/sites-available/deploykit.conf": ("root", "root", 0o644),
        "var/lib/deploykit": ("root", "root", 0o700),
        "var/lib/deploykit/secrets": ("root", "root", 0o700),
        "var/lib/deploykit/tls/self-signed/key.pem": ("root", "root", 0o600),
        "var/www/deploykit/deploykit-errors": ("root", "root", 0o755),
        "var/www/deploykit/acme": ("root", "root", 0o755),
    }
    got = {rel: _owner(root / rel) for rel in expected}
    assert got == expected
    # The service user cannot look into deploykit's state (secrets, TLS key, checkpoints).
    res = subprocess.run(["runuser", "-u", user, "--", "ls", str(root / "var/lib/deploykit")],
                         capture_output=True, timeout=30)
    assert res.returncode != 0


def test_the_user_owns_what_it_saves_and_its_settings(system):
    s, _ = login(system)
    nb = {"type": "notebook", "content": {
        "cells": [{"cell_type": "code", "source": "1+1", "metadata": {}, "outputs": [], "execution_count": None}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}
    from support import xsrf_headers

    res = s.put(system.url("api/contents/saved.ipynb"), json=nb, headers=xsrf_headers(s, system))
    assert res.status_code in (200, 201), res.text
    saved = system.root / "srv/jupyter/saved.ipynb"
    assert _owner(saved)[0] == system.user
    # Saving signs the notebook into the data dir: it must be writable by the user.
    assert _owner(system.root / "var/lib/jupyter/data/nbsignatures.db")[0] == system.user
    # JupyterLab's settings go to the user's home, not to root's /etc/jupyter.
    res = s.put(system.url("lab/api/settings/@jupyterlab/apputils-extension:themes"),
                json={"raw": '{"theme": "JupyterLab Dark"}'}, headers=xsrf_headers(s, system))
    assert res.status_code == 204, res.text
    settings = system.root / "home" / system.user / ".jupyter/lab/user-settings/@jupyterlab/apputils-extension"
    assert _owner(settings / "themes.jupyterlab-settings")[0] == system.user


# -- sharing the distribution's daemons --------------------------------------------------------------

def test_update_leaves_other_programs_and_their_pending_edits_alone(system):
    from deploykit.supervisor import Supervisor

    sup = Supervisor(system.paths)
    before = sup.probe_programs()["other"]["pid"]
    add_other_program(system.root, seconds=3602)     # an edit the admin has not applied yet
    try:
        added, changed, removed = sup.probe_reread()
        assert "other" not in added + changed + removed
        assert not [line for line in sup.apply_update() if "other" in line]
        assert sup.probe_programs()["other"]["pid"] == before
    finally:
        add_other_program(system.root)


def test_reload_without_changes_changes_nothing(system):
    res = system.dk("reload")
    assert res.returncode == 0, res.stderr
    assert "no changes" in res.stdout


def test_stop_stops_jupyter_and_leaves_the_daemons_running(system):
    from deploykit.nginx import Nginx
    from deploykit.supervisor import Supervisor

    try:
        res = system.dk("stop")
        assert res.returncode == 0, res.stderr
        programs = Supervisor(system.paths).probe_programs()
        assert programs["jupyter"]["state"] == "STOPPED"
        assert programs["other"]["state"] == "RUNNING"
        assert Nginx(system.paths, "nginx").probe_pid() is not None
    finally:
        res = system.dk("provision", "--password-stdin", input=PASSWORD + "\n")
        assert res.returncode == 0, res.stdout + res.stderr
    assert system.status()["healthy"]


def test_uninstall_removes_only_deploykits_files_and_programs(system):
    """Last test of the module: the deployment is gone afterwards."""
    from deploykit.nginx import Nginx
    from deploykit.supervisor import Supervisor

    root = system.root
    res = system.dk("uninstall", "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    programs = Supervisor(system.paths).probe_programs()
    assert "jupyter" not in programs, "supervisord was not told the program is gone"
    assert programs["other"]["state"] == "RUNNING"
    assert Nginx(system.paths, "nginx").probe_pid() is not None
    for rel in ("etc/nginx/sites-enabled/deploykit.conf", "etc/nginx/sites-available/deploykit.conf",
                "etc/nginx/modules-enabled/90-deploykit-main.conf", "etc/nginx/snippets/deploykit",
                "etc/supervisor/conf.d/deploykit-jupyter.conf", "etc/jupyter"):
        assert not (root / rel).exists(), rel
    for package, path, prefixes in (NGINX_STOCK, SUPERVISOR_STOCK):
        assert (root / path.relative_to("/")).read_text() == rebase(stock_text(package, path), root, prefixes)
    # The users' work and the user stay.
    assert (root / "srv/jupyter/saved.ipynb").is_file()
    assert uid_of(system.user) is not None
    import requests

    s = requests.Session()
    s.trust_env = False
    res = s.get(f"https://other.test:{system.https_port}/", verify=str(root / "etc/ssl/other-cert.pem"), timeout=10)
    assert res.text == "other site\n"


# -- refused before anything is written ----------------------------------------------------------------

@pytest.fixture
def bare_root():
    root = make_system_root()
    yield root
    tear_down_root(root, None)


def _provision_bad(root: Path, *extra, user: str | None = None):
    user = user or unique_user()
    existed = uid_of(user) is not None
    before = tree_snapshot(root)
    http_port, https_port = free_ports(2)
    res = dk("provision", "--target", "system", "--root", root, "--domain", "jupyter.test",
             "--http-port", http_port, "--https-port", https_port, "--user", user, "--python", JUPYTER_PYTHON,
             "--password-stdin", *extra, input=PASSWORD + "\n")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert tree_snapshot(root) == before, "a refused provision changed files"
    assert existed or uid_of(user) is None, "a refused provision created the user"
    return res.stderr


@pytest.mark.parametrize("package,remove", [
    ("supervisor", "etc/supervisor"),
    ("nginx", "etc/nginx/nginx.conf"),
])
def test_missing_package_exits_2_naming_it_and_the_command(bare_root, package, remove):
    target = bare_root / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    err = _provision_bad(bare_root)
    assert f"package '{package}'" in err
    assert f"apt-get install -y {package}" in err
    assert "--install-missing" in err


def test_install_missing_is_refused_under_root(bare_root):
    shutil.rmtree(bare_root / "etc/supervisor")
    err = _provision_bad(bare_root, "--install-missing")
    assert "--install-missing" in err and "--root" in err


def test_an_nginx_conf_without_sites_enabled_is_refused(bare_root):
    conf = bare_root / "etc/nginx/nginx.conf"
    conf.write_text(re.sub(r"\n\s*include \S+/sites-enabled/\*;", "", conf.read_text()))
    err = _provision_bad(bare_root)
    assert "sites-enabled" in err


def test_root_as_service_user_is_refused(bare_root):
    err = _provision_bad(bare_root, user="root")
    assert "--user 'root'" in err


def test_python_the_service_user_cannot_run_is_refused(bare_root, tmp_path):
    private = tmp_path / "private-env" / "bin"     # pytest's tmp dirs are 0700
    private.mkdir(parents=True)
    (private / "python").symlink_to(sys.executable)
    err = _provision_bad(bare_root, "--python", str(private / "python"))
    assert "--python" in err and "cannot run it" in err


# -- the Jupyter environment built from the system Python --------------------------------------------

@pytest.mark.slow
def test_without_python_jupyter_runs_from_an_env_built_from_the_system_python():
    """No --python: provision builds /opt/deploykit/jupyter (python3 -m venv, notebook from PyPI)
    that the service user can run, records it in the spec, and a second run reuses it."""
    root, user = make_system_root(), unique_user()
    try:
        dep, res = provision_system(root, user, python=None, timeout=900)
        assert res.returncode == 0, res.stdout + res.stderr
        env = root / "opt/deploykit/jupyter"
        assert f"built {env} from /usr/bin/python3" in res.stdout
        assert f'python = "{env}/bin/python"' in (dep.state_dir / "deploykit.toml").read_text()
        pid = dep.program_pid("jupyter")
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == f"{env}/bin/python".encode()
        assert process_uids(pid) == [uid_of(user)] * 4
        assert _owner(env) == ("root", "root", 0o755)
        res = subprocess.run(["runuser", "-u", "nobody", "--", f"{env}/bin/python", "-c",
                              "import notebook.app, ipykernel, sys; print(sys.base_prefix)"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and res.stdout.strip() == "/usr", res.stderr
        s, login_res = login(dep)
        assert login_res.status_code == 302
        assert execute(s, dep, start_kernel(s, dep), "import sys; sys.prefix") == repr(str(env))
        res = dep.dk("provision", "--password-stdin", input=PASSWORD + "\n")
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"{env} ready" in res.stdout
    finally:
        tear_down_root(root, user)
