"""Issue 3: JupyterHub mode end to end with the real daemons: PAM users made by useradd, the hub
and configurable-http-proxy under supervisord, nginx with TLS in front.

One deployment for the module; two system users (an admin and an ordinary user), removed at the end.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
from pathlib import Path

import pytest
from deploykit.host import probe_host
from support import (
    dk, hub_api, hub_execute, hub_login, hub_open_server, hub_server, hub_spawn, hub_start_kernel,
    make_system_user, processes_mentioning, processes_of_uid, provision_hub, remove_system_user, tree_snapshot,
    user_headers, user_processes, wait_until,
)

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(os.geteuid() != 0, reason="hub mode needs root (PAM, servers run as users)")]


@pytest.fixture(scope="module")
def users():
    made = [make_system_user(), make_system_user()]
    yield {"admin": made[0], "user": made[1]}
    for name, _ in made:
        remove_system_user(name)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, users):
    admin, user = users["admin"][0], users["user"][0]
    dep, res = provision_hub(tmp_path_factory.mktemp("hub") / "state",
                             extra=["--admin", admin, "--allow", user, "--idle-timeout", "0"])
    dep.provision_output = res.stdout
    yield dep
    dep.stop()


@pytest.fixture(scope="module")
def sessions(hub, users):
    """Each user logged in through nginx, with a running server."""
    out = {}
    for role, (name, password) in users.items():
        s, res = hub_login(hub, name, password)
        assert res.status_code == 302, (res.status_code, res.text[:300])
        out[role] = (name, s)
    return out


def test_provision_says_who_can_log_in(hub, users):
    out = hub.provision_output
    assert f"ready: https://hub.test:{hub.https_port}/" in out
    assert "who can log in: system accounts" in out
    assert users["admin"][0] in out and users["user"][0] in out
    assert f"admins: {users['admin'][0]}" in out


def test_hub_api_answers_through_nginx(hub):
    res = hub.session().get(hub.url("hub/api/"))
    assert res.status_code == 200
    assert int(res.json()["version"].split(".")[0]) >= 5
    assert res.headers["server"] == "nginx"
    assert res.headers["strict-transport-security"]


def test_pam_login_spawn_and_code_over_wss(hub, sessions):
    name, s = sessions["user"]
    seconds = hub_spawn(s, hub, name)
    print(f"\nfirst spawn of {name}'s server: {seconds:.1f} s")
    hub_open_server(s, hub, name)
    assert s.get(hub.url(f"user/{name}/api/status")).status_code == 200
    kernel = hub_start_kernel(s, hub, name)
    assert hub_execute(s, hub, name, kernel, "1+1") == "2"
    # The server is the user's own: their uid, their home.
    whoami = hub_execute(s, hub, name, kernel, "import os, pwd; print(pwd.getpwuid(os.getuid()).pw_name, os.getcwd())")
    assert whoami == f"{name} /home/{name}"


def test_wrong_password_is_refused(hub, users):
    name, _ = users["user"]
    s, res = hub_login(hub, name, "not-the-password")
    assert res.status_code == 403
    assert hub_api(s, hub, "GET", f"users/{name}").status_code == 403


def test_browser_path_login_spawn_page_then_jupyterlab(hub, users):
    """What a browser does: the login form, the hub's spawn page, its pending page, then JupyterLab."""
    name, password = users["admin"]
    s, res = hub_login(hub, name, password)
    assert res.status_code == 302
    res = s.get(hub.url("hub/spawn"))
    assert res.status_code == 200
    assert res.url.startswith(hub.url(f"hub/spawn-pending/{name}")) or res.url.startswith(hub.url(f"user/{name}/"))
    wait_until(lambda: (hub_server(s, hub, name) or {}).get("ready"), timeout=120, what="the server")
    res = s.get(hub.url(f"hub/spawn-pending/{name}"))
    assert res.status_code == 200
    assert res.url == hub.url(f"user/{name}/lab"), res.url
    assert "JupyterLab" in res.text


def test_two_users_have_their_own_servers_and_kernels(hub, sessions):
    kernels = {}
    for role in ("admin", "user"):
        name, s = sessions[role]
        hub_spawn(s, hub, name)
        hub_open_server(s, hub, name)
        kernels[role] = hub_start_kernel(s, hub, name)
    a_name, a = sessions["admin"]
    u_name, u = sessions["user"]
    hub_execute(a, hub, a_name, kernels["admin"], "shared_secret = 'admin-only'; print('set')")
    assert hub_execute(u, hub, u_name, kernels["user"], "print('shared_secret' in globals())") == "False"
    assert hub_execute(a, hub, a_name, kernels["admin"], "print(shared_secret)") == "admin-only"
    pids = {role: hub_execute(sessions[role][1], hub, sessions[role][0], kernels[role], "import os; print(os.getuid())")
            for role in kernels}
    assert pids["admin"] != pids["user"]
    # One user's cookies do not open the other's server.
    res = u.get(hub.url(f"user/{a_name}/api/kernels"), allow_redirects=False)
    assert res.status_code in (302, 403), res.status_code
    res = u.post(hub.url(f"user/{a_name}/api/kernels"), json={}, headers=user_headers(u, hub, a_name),
                 allow_redirects=False)
    assert res.status_code in (302, 403), res.status_code


def test_admin_api_is_for_admins_only(hub, sessions):
    u_name, u = sessions["user"]
    a_name, a = sessions["admin"]
    assert hub_api(u, hub, "GET", "users").status_code == 403
    assert hub_api(u, hub, "GET", f"users/{a_name}").status_code in (403, 404)
    assert hub_api(u, hub, "DELETE", f"users/{a_name}/server").status_code in (403, 404)
    res = hub_api(a, hub, "GET", "users")
    assert res.status_code == 200
    assert {a_name, u_name} <= {x["name"] for x in res.json()}
    admin_page = a.get(hub.url("hub/admin"))
    assert admin_page.status_code == 200
    assert u.get(hub.url("hub/admin"), allow_redirects=False).status_code == 403


def test_restarting_the_hub_leaves_user_servers_running(hub, sessions):
    from deploykit.paths import local_paths
    from deploykit.supervisor import Supervisor

    name, s = sessions["user"]
    hub_spawn(s, hub, name)
    hub_open_server(s, hub, name)
    kernel = hub_start_kernel(s, hub, name)
    hub_execute(s, hub, name, kernel, "kept = 41; print(kept)")
    server_pid = hub_execute(s, hub, name, kernel, "import os; print(os.getppid())")
    sup = Supervisor(local_paths(hub.state_dir))
    before = sup.probe_programs()
    sup.apply_restart("jupyterhub")
    after = wait_until(lambda: (p := sup.probe_programs())["jupyterhub"]["state"] == "RUNNING" and p,
                       timeout=60, what="the hub to run again")
    assert after["jupyterhub"]["pid"] != before["jupyterhub"]["pid"]
    assert after["configurable-http-proxy"]["pid"] == before["configurable-http-proxy"]["pid"]
    wait_until(lambda: hub.session().get(hub.url("hub/api/")).status_code == 200, timeout=60, what="hub API")
    # Same server, same kernel, same variables; the hub still knows it is running.
    assert hub_execute(s, hub, name, kernel, "kept + 1") == "42"
    assert (hub_server(s, hub, name) or {}).get("ready")
    assert hub_execute(s, hub, name, kernel, "import os; print(os.getppid())") == server_pid
    # A kernel started now works too: the server's output never went through the old hub's
    # stdout (a pipe that closed with it), but to its own log file.
    fresh = hub_start_kernel(s, hub, name)
    assert hub_execute(s, hub, name, fresh, "6 * 7", timeout=30) == "42"
    log = hub.state_dir / "logs" / "user-servers" / f"{name}.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600 and log.stat().st_uid == 0
    assert b"jupyterhub.singleuser" in log.read_bytes() or b"ServerApp" in log.read_bytes()


def test_restarting_the_proxy_brings_routes_to_running_servers_back(hub, sessions):
    """A restarted configurable-http-proxy starts with an empty routing table and the hub (which
    did not start it) is not told: the hub's periodic route check re-adds the routes."""
    from deploykit.paths import local_paths
    from deploykit.supervisor import Supervisor

    name, s = sessions["user"]
    hub_spawn(s, hub, name)
    hub_open_server(s, hub, name)
    kernel = hub_start_kernel(s, hub, name)
    hub_execute(s, hub, name, kernel, "kept_across_proxy = 6; print(kept_across_proxy)")
    hub_log = hub.state_dir / "logs" / "jupyterhub.log"
    readded = f"Adding missing route for /user/{name}/"
    readded_before = hub_log.read_text().count(readded)
    sup = Supervisor(local_paths(hub.state_dir))
    before = sup.probe_programs()
    sup.apply_restart("configurable-http-proxy")
    after = wait_until(lambda: (p := sup.probe_programs())["configurable-http-proxy"]["state"] == "RUNNING" and p,
                       timeout=60, what="the proxy to run again")
    assert after["configurable-http-proxy"]["pid"] != before["configurable-http-proxy"]["pid"]
    assert after["jupyterhub"]["pid"] == before["jupyterhub"]["pid"]
    # Without its route the request reaches the hub (the proxy's default target), which only
    # redirects; with it, the user's server answers. Bounded: the hub checks every 10 s.
    wait_until(lambda: s.get(hub.url(f"user/{name}/api/status"), allow_redirects=False).status_code == 200,
               timeout=60, interval=0.5, what=f"the proxy's route to {name}'s server to come back")
    # The hub put it back (the restarted proxy had an empty table).
    assert hub_log.read_text().count(readded) > readded_before
    assert hub_execute(s, hub, name, kernel, "kept_across_proxy + 1") == "7"
    assert (hub_server(s, hub, name) or {}).get("ready")


def test_secrets_are_0600_and_the_proxy_token_never_on_a_command_line(hub):
    secrets = hub.state_dir / "secrets"
    for name in ("jupyterhub-cookie-secret", "proxy-auth-token", "hub-service-token"):
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600, name
    db = hub.state_dir / "jupyterhub" / "jupyterhub.sqlite"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    config = hub.state_dir / "jupyterhub" / "jupyterhub_config.py"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    token = (secrets / "proxy-auth-token").read_text().strip()
    assert len(token) >= 32
    for p in (hub.state_dir / "supervisor").rglob("*"):
        if p.is_file():
            assert token not in p.read_text(), p
    assert token not in config.read_text()
    assert not [p for p in processes_mentioning(token)]
    text = config.read_text()
    assert "c.JupyterHub.cleanup_servers = False" in text
    assert "c.ConfigurableHTTPProxy.should_start = False" in text
    assert "c.JupyterHub.bind_url = 'http://127.0.0.1:" in text


def test_proxy_runs_unprivileged_on_loopback(hub):
    proxy = [p for p in processes_mentioning("configurable-http-proxy") if str(hub.state_dir) not in p]
    spec = (hub.state_dir / "deploykit.toml").read_text()
    port = next(line.split("=")[1].strip() for line in spec.splitlines() if line.startswith("proxy_port"))
    mine = [p for p in proxy if f"--port {port} " in p]
    assert mine, proxy
    pid = mine[0].split(":")[0]
    uid = next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("Uid:"))
    # Its own account (its environment holds the proxy's token): nothing else runs as it.
    account = pwd.getpwnam("deploykit-proxy")
    assert uid == str(account.pw_uid)
    assert account.pw_shell == "/usr/sbin/nologin" and account.pw_gid != pwd.getpwnam("nobody").pw_gid
    for line in processes_of_uid(account.pw_uid):
        # (or its launcher, between dropping root and exec)
        assert "configurable-http-proxy" in line or "deploykit.chp" in line, line
    assert "--ip 127.0.0.1" in mine[0] and "--api-ip 127.0.0.1" in mine[0]


def test_status_says_where_the_user_environment_lives(hub):
    res = hub.dk("status", "--json")
    status = json.loads(res.stdout)
    assert res.returncode == 0, res.stdout
    assert status["healthy"]
    assert {p["name"] for p in status["programs"]} == {"jupyterhub", "configurable-http-proxy"}
    assert "jupyterhub-singleuser" in status["user_environment"]
    text = hub.dk("status").stdout
    assert "user env:" in text


def test_reload_without_changes_changes_nothing(hub):
    res = hub.dk("reload")
    assert res.returncode == 0, res.stderr
    assert "no changes" in res.stdout


# -- bad input: exit 2, nothing written ---------------------------------------------------------

def _fresh(tmp_path, *args, input: str = ""):
    state = tmp_path / "state"
    res = dk("provision", "--target", "local", "--state-dir", state, "--domain", "hub.test", "--mode", "hub",
             *args, input=input)
    return state, res


@pytest.mark.parametrize("args,named", [
    (["--authenticator", "ldap", "--allow-all"], "--authenticator"),
    (["--admin", "Not A User"], "--admin"),
    (["--allow", "a;b"], "--allow"),
    (["--allow", "-rf"], "--allow"),
    (["--admin", "x" * 40], "--admin"),
    ([], "--allow"),  # nobody could log in
    (["--admin", "root"], "--admin"),
    (["--admin", "dktnosuchuser0"], "--admin"),
    (["--allow-all", "--idle-timeout", "3"], "--idle-timeout"),
    (["--authenticator", "native"], "--admin"),
    (["--authenticator", "native", "--admin", "a" * 28], "--admin"),  # jupyter-NAME would be too long
    (["--authenticator", "shared-password", "--allow-all"], "shared-password"),
    (["--allow-all", "--mem-limit", "1G"], "--mem-limit"),
])
def test_bad_hub_input_exits_2_and_creates_nothing(tmp_path, args, named):
    state, res = _fresh(tmp_path, *args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert named in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 3
    assert not state.exists()


def test_short_shared_password_exits_2_without_echoing_it(tmp_path):
    state, res = _fresh(tmp_path, "--authenticator", "shared-password", "--allow-all", "--shared-password-stdin",
                        input="s3cr3t\n")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "--shared-password-stdin" in res.stderr and "8 characters" in res.stderr
    assert "s3cr3t" not in res.stderr + res.stdout
    assert not state.exists()


@pytest.mark.parametrize("args", [
    ["--authenticator", "ldap"],
    ["--admin", "Bad Name"],
    pytest.param(["--spawner", "systemd"], marks=pytest.mark.skipif(
        probe_host().systemd, reason="this machine can run the systemd spawner")),
    ["--allow", "dktnosuchuser0"],
    ["--authenticator", "shared-password", "--allow-all", "--shared-password-stdin"],
    ["--idle-timeout", "1"],
])
def test_bad_hub_input_leaves_an_existing_hub_unchanged(hub, args):
    watched = ("nginx", "jupyterhub", "supervisor", "secrets")
    before = {d: tree_snapshot(hub.state_dir / d) for d in watched}
    spec_before = (hub.state_dir / "deploykit.toml").read_bytes()
    res = hub.dk("provision", *args, input="short\n")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert (hub.state_dir / "deploykit.toml").read_bytes() == spec_before
    for d in watched:
        if d == "jupyterhub":
            # The hub writes its own database; deploykit's files there must not change.
            keep = {k: v for k, v in before[d].items() if "sqlite" not in k}
            assert {k: v for k, v in tree_snapshot(hub.state_dir / d).items() if "sqlite" not in k} == keep
        else:
            assert tree_snapshot(hub.state_dir / d) == before[d], d


def test_reload_refuses_a_spec_edit_that_locks_everybody_out(hub):
    spec_path = hub.state_dir / "deploykit.toml"
    original = spec_path.read_text()
    before = tree_snapshot(hub.state_dir / "jupyterhub")
    edited = "\n".join("admins = []" if line.startswith("admins =") else
                       "allowed_users = []" if line.startswith("allowed_users =") else line
                       for line in original.splitlines()) + "\n"
    spec_path.write_text(edited)
    try:
        res = hub.dk("reload")
        assert res.returncode == 2, (res.stdout, res.stderr)
        assert "nobody could log in" in res.stderr
        config = hub.state_dir / "jupyterhub" / "jupyterhub_config.py"
        assert tree_snapshot(hub.state_dir / "jupyterhub")[str(config)] == before[str(config)]
    finally:
        spec_path.write_text(original)


def test_stop_stops_user_servers_too(hub, sessions):
    """Last in the module: the hub keeps users' servers across its restarts, but `stop` means stop."""
    name, s = sessions["user"]
    hub_spawn(s, hub, name)
    assert user_processes(name)
    res = hub.dk("stop")
    assert res.returncode == 0, res.stderr
    assert "user servers" in res.stdout
    wait_until(lambda: not user_processes(name), timeout=30, what=f"{name}'s processes to exit")
    assert not processes_mentioning(str(hub.state_dir))
