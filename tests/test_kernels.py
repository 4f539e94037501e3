"""Issue 7: kernels from several Python environments, with clear names, in Notebook and Hub mode.

The environments are real venvs made in the test (`python -m venv --without-pip`, each with its
own sys.prefix and site-packages). ipykernel reaches them through a .pth file naming the test
environment's site-packages, the way --system-site-packages would if that environment were a
base Python: installing ipykernel from PyPI into each would only make the suite slow. Each venv
also gets a module of its own (envmark) that no other environment has, so a kernel that imports
it provably runs in that venv.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import ssl
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from pathlib import Path

import pytest
from support import (Deployment, clean_env, dk, execute, login, provision, run_on_socket, start_kernel,
                     tree_snapshot, wait_until)

from deploykit import kernels
from deploykit.errors import BadInput
from deploykit.paths import local_paths
from deploykit.spec import build_spec, dump_spec, parse_spec

BASE_PYTHON = getattr(sys, "_base_executable", None) or "/usr/bin/python3"
TEST_SITE = sysconfig.get_paths()["purelib"]


def make_venv(path: Path, mark: str, ipykernel: bool = True) -> Path:
    """A real venv at path; returns its interpreter."""
    subprocess.run([BASE_PYTHON, "-m", "venv", "--without-pip", str(path)], check=True, timeout=60)
    python = path / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    assert site.is_relative_to(path)
    if ipykernel:
        (site / "deploykit-test-ipykernel.pth").write_text(TEST_SITE + "\n")
    (site / "envmark.py").write_text(f"NAME = {mark!r}\n")
    return python


@pytest.fixture(scope="module")
def envs():
    """Two venvs with ipykernel and one without, under a directory every user can enter
    (hub users' servers run them)."""
    top = Path(tempfile.mkdtemp(prefix="dk-kernel-envs-", dir="/tmp"))
    os.chmod(top, 0o755)
    made = {
        "a": make_venv(top / "project-a" / ".venv", "a"),
        "b": make_venv(top / "project-b" / ".venv", "b"),
        "bare": make_venv(top / "bare" / "venv", "bare", ipykernel=False),
    }
    yield top, made
    shutil.rmtree(top, ignore_errors=True)


def specs_via_nginx(session, dep: Deployment, prefix: str = "") -> dict:
    res = session.get(dep.url(f"{prefix}api/kernelspecs"))
    res.raise_for_status()
    return res.json()["kernelspecs"]


def display_names(specs: dict) -> dict[str, str]:
    return {name: s["spec"]["display_name"] for name, s in specs.items()}


def prefix_of(python: Path) -> str:
    return str(python.parent.parent)


def ran(res) -> str:
    return f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"


# -- pure -------------------------------------------------------------------------------------

def base_spec(**over):
    raw = {"deployment": {"domain": "jupyter.test"}, **over}
    return build_spec(raw)


def test_order_becomes_a_padded_prefix_and_the_spec_round_trips():
    spec = base_spec(kernels=[{"name": "a", "python": "/e/a/bin/python", "display_name": "Zed"},
                              {"name": "b", "python": "/e/b/bin/python", "display_name": "Beta", "order": 2},
                              {"name": "c", "python": "/e/c/bin/python", "display_name": "Alpha", "order": 10}])
    assert kernels.shown_names(spec) == {"a": "Zed", "b": "02. Beta", "c": "10. Alpha"}
    assert parse_spec(dump_spec(spec)) == spec
    assert "order" not in dump_spec(spec).split("[[kernels]]")[1]  # unset order stays out of the file
    order = kernels.ui_order([("a", "Zed"), ("b", "02. Beta"), ("python3", "Python 3"), ("c", "10. Alpha")])
    assert [n for n, _ in order] == ["python3", "b", "c", "a"]


def test_kernel_files_are_kernelspecs_in_the_data_dir_jupyter_reads(tmp_path):
    spec = base_spec(deployment={"domain": "jupyter.test", "default_kernel_display_name": "Python 3 (server)"},
                     kernels=[{"name": "proj", "python": "/srv/envs/proj/bin/python", "display_name": "Proj ✓"}])
    paths = local_paths(tmp_path / "state")
    files = {f.path: f for f in kernels.build_kernel_files(spec, paths, None)}
    proj = json.loads(files[paths.jupyter_data_dir / "kernels" / "proj" / "kernel.json"].content)
    assert proj["argv"] == ["/srv/envs/proj/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert proj["display_name"] == "Proj ✓" and proj["language"] == "python"
    assert proj["env"] == {"PATH": "/srv/envs/proj/bin:${PATH}"}
    default = json.loads(files[paths.jupyter_data_dir / "kernels" / "python3" / "kernel.json"].content)
    assert default["argv"][0] == "python" and default["display_name"] == "Python 3 (server)"
    assert kernels.kernel_search_path(spec, paths) == str(paths.jupyter_data_dir)
    hub = spec.with_values({"deployment": {"mode": "hub"}})
    assert kernels.kernel_search_path(hub, paths) == str(tmp_path / "state-shared")
    assert all(d.mode == 0o755 for d in kernels.build_kernel_dirs(hub, paths))


def test_spec_refuses_python3_and_bad_orders():
    for bad in ({"name": "python3", "python": "/e/bin/python", "display_name": "X"},
                {"name": "ok", "python": "/e/bin/python", "display_name": "X", "order": 100},
                {"name": "ok", "python": "relative/python", "display_name": "X"}):
        with pytest.raises(BadInput):
            base_spec(kernels=[bad])


def test_name_clash_with_a_kernel_jupyter_already_has(tmp_path):
    spec = base_spec()
    paths = local_paths(tmp_path / "state")
    seen = {"python3": {"resource_dir": "/venv/share/jupyter/kernels/python3"},
            "julia": {"resource_dir": "/usr/local/share/jupyter/kernels/julia"},
            "mine": {"resource_dir": str(paths.jupyter_data_dir / "kernels" / "mine")}}
    foreign = kernels.foreign_kernels(seen, spec, paths)
    assert foreign == {"julia": "/usr/local/share/jupyter/kernels/julia"}
    with pytest.raises(BadInput, match="jupyter kernelspec remove julia"):
        kernels.check_kernel_name(spec, "julia", foreign)


# -- Notebook mode, real deployment -------------------------------------------------------------

@pytest.mark.real
def test_added_kernels_are_listed_through_nginx_and_run_in_their_own_prefix(notebook, envs):
    _, py = envs
    res = notebook.dk("kernel", "add", "--python", py["a"], "--name", "proj-a", "--display-name", "Project A")
    assert res.returncode == 0, ran(res)
    res = notebook.dk("kernel", "add", "--python", py["b"], "--name", "proj-b", "--display-name", "Project B",
                      "--order", "1")
    assert res.returncode == 0, ran(res)
    try:
        s, _ = login(notebook)
        names = display_names(specs_via_nginx(s, notebook))
        assert names["proj-a"] == "Project A"
        assert names["proj-b"] == "1. Project B"
        for name, key in (("proj-a", "a"), ("proj-b", "b")):
            kernel = start_kernel(s, notebook, name=name)
            said = execute(s, notebook, kernel, "import sys, envmark; print(sys.prefix, envmark.NAME)")
            assert said == f"{prefix_of(py[key])} {key}"
        listed = json.loads(notebook.dk("kernel", "list", "--json").stdout)
        mine = {r["name"]: r for r in listed["kernels"]}
        assert mine["proj-a"]["seen_by_jupyter"] and mine["proj-b"]["shown_as"] == "1. Project B"
        assert [r["name"] for r in listed["kernels"]][:2] == ["python3", "proj-b"]  # the launcher's order
        again = notebook.dk("reload")
        assert again.returncode == 0 and "no changes" in again.stdout, ran(again)
    finally:
        notebook.dk("kernel", "remove", "proj-a")
        notebook.dk("kernel", "remove", "proj-b")


@pytest.mark.real
def test_the_default_kernel_gets_a_clear_name_and_can_get_it_back(notebook):
    res = notebook.dk("kernel", "rename-default", "--display-name", "Python 3 (deploykit)")
    assert res.returncode == 0, ran(res)
    s, _ = login(notebook)
    specs = specs_via_nginx(s, notebook)
    assert specs["python3"]["spec"]["display_name"] == "Python 3 (deploykit)"
    kernel = start_kernel(s, notebook, name="python3")
    assert execute(s, notebook, kernel, "import sys; print(sys.prefix)") == sys.prefix  # the server's own env
    res = notebook.dk("kernel", "rename-default", "--reset")
    assert res.returncode == 0, ran(res)
    assert specs_via_nginx(s, notebook)["python3"]["spec"]["display_name"] == "Python 3 (ipykernel)"


@pytest.mark.real
def test_remove_then_reload_drops_the_kernel_and_so_does_editing_the_spec(notebook, envs):
    _, py = envs
    kernel_dir = notebook.state_dir / "jupyter" / "data" / "kernels"
    s, _ = login(notebook)
    for name in ("gone-1", "gone-2"):
        res = notebook.dk("kernel", "add", "--python", py["a"], "--name", name)
        assert res.returncode == 0, ran(res)
    assert {"gone-1", "gone-2"} <= set(specs_via_nginx(s, notebook))

    res = notebook.dk("kernel", "remove", "gone-1")
    assert res.returncode == 0, ran(res)
    res = notebook.dk("reload")
    assert res.returncode == 0, ran(res)
    assert "gone-1" not in specs_via_nginx(s, notebook)
    assert not (kernel_dir / "gone-1").exists()

    # Dropped from the spec by hand: reload removes what it had written.
    spec_path = notebook.state_dir / "deploykit.toml"
    text = spec_path.read_text()
    table = re.search(r'\n\[\[kernels\]\]\nname = "gone-2"\n(?:[a-z_]+ = .*\n)*', text)
    spec_path.write_text(text.replace(table.group(0), "\n"))
    res = notebook.dk("reload")
    assert res.returncode == 0, ran(res)
    assert "gone-2" not in specs_via_nginx(s, notebook)
    assert not (kernel_dir / "gone-2" / "kernel.json").exists()
    res = notebook.dk("reload")
    assert res.returncode == 0 and "no changes" in res.stdout, ran(res)


def _snapshot(state: Path) -> dict:
    # Logs and run state move on their own while Jupyter runs; everything else must not.
    return {p: v for p, v in tree_snapshot(state).items()
            if not p.startswith((str(state / "logs"), str(state / "run")))}


BAD = {
    "no-ipykernel": (lambda py, tmp: ["--python", py["bare"], "--name", "bare"], "pip install ipykernel"),
    "sh": (lambda py, tmp: ["--python", "/bin/sh", "--name", "shell"], "not a Python interpreter"),
    "env": (lambda py, tmp: ["--python", "/usr/bin/env", "--name", "env"], "not a Python interpreter"),
    "missing": (lambda py, tmp: ["--python", tmp / "nowhere" / "bin" / "python", "--name", "nowhere"], "no such file"),
    "directory": (lambda py, tmp: ["--python", py["a"].parent.parent, "--name", "dir"], "is a directory"),
    "not-executable": (lambda py, tmp: ["--python", tmp / "python3", "--name", "noexec"], "not an executable file"),
    "default-name": (lambda py, tmp: ["--python", py["a"], "--name", "python3"], "deployment's own Python kernel"),
    "bad-name": (lambda py, tmp: ["--python", py["a"], "--name", "Bad Name"], "--name"),
    "bad-order": (lambda py, tmp: ["--python", py["a"], "--name", "ok", "--order", "100"], "--order"),
}


@pytest.mark.real
@pytest.mark.parametrize("case", BAD)
def test_bad_paths_exit_2_and_change_nothing(notebook, envs, tmp_path, case):
    args, says = BAD[case]
    _, py = envs
    (tmp_path / "python3").write_text("#!/bin/sh\n")  # named like Python, but not executable
    before = _snapshot(notebook.state_dir)
    res = notebook.dk("kernel", "add", *args(py, tmp_path))
    assert res.returncode == 2, ran(res)
    assert says in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 3
    assert _snapshot(notebook.state_dir) == before


@pytest.mark.real
def test_a_name_clash_exits_2_and_changes_nothing(notebook, envs):
    _, py = envs
    res = notebook.dk("kernel", "add", "--python", py["b"], "--name", "taken")
    assert res.returncode == 0, ran(res)
    try:
        before = _snapshot(notebook.state_dir)
        res = notebook.dk("kernel", "add", "--python", py["a"], "--name", "taken")
        assert res.returncode == 2, ran(res)
        assert "already a kernel of this deployment" in res.stderr
        assert _snapshot(notebook.state_dir) == before
    finally:
        notebook.dk("kernel", "remove", "taken")


@pytest.mark.real
def test_remove_of_an_unknown_kernel_exits_2_and_changes_nothing(notebook):
    before = _snapshot(notebook.state_dir)
    for name in ("no-such-kernel", "python3"):
        res = notebook.dk("kernel", "remove", name)
        assert res.returncode == 2, ran(res)
    assert _snapshot(notebook.state_dir) == before


@pytest.mark.real
def test_discover_finds_conda_envs_and_venvs_and_adds_them(notebook, envs, tmp_path):
    top, py = envs
    home = tmp_path / "home"
    conda_env = home / "miniconda3" / "envs" / "geo"
    make_venv(conda_env, "geo")
    (conda_env / "conda-meta").mkdir()
    listed_env = tmp_path / "elsewhere" / "survey"
    make_venv(listed_env, "survey")
    (listed_env / "conda-meta").mkdir()
    (home / ".conda").mkdir(parents=True)
    (home / ".conda" / "environments.txt").write_text(f"{listed_env}\n")
    env = {k: v for k, v in clean_env(HOME=str(home)).items() if not k.startswith(("CONDA", "MAMBA"))}

    res = dk("kernel", "discover", top, "--state-dir", notebook.state_dir, env=env)
    assert res.returncode == 0, ran(res)
    for prefix in (conda_env, listed_env, top / "project-a" / ".venv", top / "project-b" / ".venv"):
        assert str(prefix) in res.stdout
    assert f"{py['bare']} -m pip install ipykernel" in res.stdout  # found, but cannot run a kernel
    assert "deploykit kernel add --python" in res.stdout and "--name project-a" in res.stdout
    assert not any(k.name == "geo" for k in parse_spec((notebook.state_dir / "deploykit.toml").read_text()).kernels)

    res = dk("kernel", "discover", top, "--state-dir", notebook.state_dir, "--add-all", env=env)
    assert res.returncode == 0, ran(res)
    added = [k.name for k in parse_spec((notebook.state_dir / "deploykit.toml").read_text()).kernels]
    try:
        assert {"geo", "survey", "project-a", "project-b"} <= set(added)
        s, _ = login(notebook)
        names = display_names(specs_via_nginx(s, notebook))
        assert names["geo"].startswith("Python 3.") and names["geo"].endswith("(geo)")
        kernel = start_kernel(s, notebook, name="geo")
        assert execute(s, notebook, kernel, "import sys, envmark; print(sys.prefix, envmark.NAME)") == f"{conda_env} geo"
        again = dk("kernel", "discover", top, "--state-dir", notebook.state_dir, env=env)
        assert "already offered" in again.stdout and "no new environment" in again.stdout
    finally:
        for name in ("geo", "survey", "project-a", "project-b"):
            notebook.dk("kernel", "remove", name)


# -- Hub mode -----------------------------------------------------------------------------------

def _hub_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "hub mode with the localprocess spawner needs root (servers run as each user)"
    if not shutil.which("configurable-http-proxy") or not shutil.which("useradd"):
        return "needs configurable-http-proxy and useradd"
    return None


def _kill_user_processes(uid: int) -> None:
    """Safety net: processes of the test's own throwaway account (a server the hub left behind)."""
    for pid_dir in Path("/proc").iterdir():
        if pid_dir.name.isdigit():
            try:
                if pid_dir.stat().st_uid == uid:
                    os.kill(int(pid_dir.name), 9)
            except OSError:
                pass


@pytest.fixture
def hub_user():
    name = "dkk" + uuid.uuid4().hex[:8]
    password = "Kernel-" + uuid.uuid4().hex[:12]
    subprocess.run(["useradd", "--create-home", name], check=True, timeout=60)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, timeout=60)
    uid = pwd.getpwnam(name).pw_uid
    yield name, password
    _kill_user_processes(uid)
    subprocess.run(["userdel", "--remove", name], capture_output=True, timeout=60)


def _path_cookie(session, name: str, path_prefix: str) -> str:
    return next(c.value for c in session.cookies if c.name == name and c.path.startswith(path_prefix))


@pytest.mark.real
@pytest.mark.skipif(_hub_skip_reason() is not None, reason=_hub_skip_reason() or "")
def test_in_hub_mode_every_users_server_sees_the_same_kernels(envs, hub_user):
    _, py = envs
    user, password = hub_user
    # Under a directory others can enter: the kernelspecs live beside the (0700) state dir.
    top = Path(tempfile.mkdtemp(prefix="dk-kernel-hub-", dir="/tmp"))
    os.chmod(top, 0o755)
    dep, _ = provision(top / "state", domain="hub.test", password=None,
                       extra=["--mode", "hub", "--authenticator", "pam", "--allow", user])
    try:
        res = dep.dk("kernel", "add", "--python", py["a"], "--name", "proj-a", "--display-name", "Project A")
        assert res.returncode == 0, ran(res)
        assert "warning" not in res.stderr, res.stderr
        res = dep.dk("kernel", "rename-default", "--display-name", "Python 3 (hub)")
        assert res.returncode == 0, ran(res)

        s = dep.session()
        page = s.get(dep.url("hub/login"))
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
        res = s.post(dep.url("hub/login"), data={"username": user, "password": password, "_xsrf": xsrf},
                     headers={"Referer": dep.url("hub/login"), "Origin": dep.origin}, allow_redirects=False)
        assert res.status_code == 302, res.text[:300]
        prefix = f"user/{user}/"
        s.get(dep.url("hub/spawn"))
        # Once it runs, following the redirects logs in to the server (OAuth with the hub).
        wait_until(lambda: s.get(dep.url(prefix + "lab")).url.endswith(prefix + "lab")
                   and s.get(dep.url(prefix + "api/kernelspecs")).status_code == 200,
                   timeout=120, interval=1, what="the user's server")
        names = display_names(specs_via_nginx(s, dep, prefix))
        assert names["proj-a"] == "Project A"
        assert names["python3"] == "Python 3 (hub)"

        user_xsrf = _path_cookie(s, "_xsrf", "/" + prefix)
        res = s.post(dep.url(prefix + "api/kernels"), json={"name": "proj-a"},
                     headers={"X-XSRFToken": user_xsrf, "Referer": dep.url(prefix + "lab"), "Origin": dep.origin})
        assert res.status_code == 201, res.text[:300]
        import websocket

        cookie = "; ".join(f"{c.name}={c.value}" for c in s.cookies if c.path in ("/", "/" + prefix))
        ws = websocket.create_connection(dep.ws_url(prefix + f"api/kernels/{res.json()['id']}/channels"),
                                         cookie=cookie, origin=dep.origin, header={"X-XSRFToken": user_xsrf},
                                         sslopt={"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(dep.cert)},
                                         timeout=60)
        try:
            said = run_on_socket(ws, "import os, sys, envmark; print(sys.prefix, envmark.NAME, os.getuid())")
        finally:
            ws.close()
        assert said == f"{prefix_of(py['a'])} a {pwd.getpwnam(user).pw_uid}"  # run as the user, in venv a

        res = dep.dk("kernel", "remove", "proj-a")
        assert res.returncode == 0, ran(res)
        assert "proj-a" not in specs_via_nginx(s, dep, prefix)
    finally:
        dep.stop()
        shutil.rmtree(top, ignore_errors=True)
