"""Issue 3: a hub under --base-url /jhub/, then edits applied by provision (idle culling turned
on, the default URL changed): the hub restarts, the proxy keeps running, idle servers are culled
and their users can start them again.
"""

from __future__ import annotations

import os

import pytest
from support import (
    hub_api, hub_execute, hub_login, hub_open_server, hub_server, hub_spawn, hub_start_kernel, make_system_user,
    provision_hub, remove_system_user, wait_until,
)

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(os.geteuid() != 0, reason="hub mode needs root (PAM, servers run as users)")]

IDLE_TIMEOUT = 15


@pytest.fixture(scope="module")
def user():
    name, password = make_system_user()
    yield name, password
    remove_system_user(name)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, user):
    dep, _ = provision_hub(tmp_path_factory.mktemp("jhub") / "state", base_url="/jhub/",
                           extra=["--allow", user[0], "--idle-timeout", "0"])
    yield dep
    dep.stop()


def test_login_spawn_and_code_under_the_base_url(hub, user):
    name, password = user
    s = hub.session()
    root = s.get(f"https://{hub.domain}:{hub.https_port}/", allow_redirects=False)
    assert root.status_code == 302 and root.headers["location"].endswith("/jhub/")
    assert s.get(hub.url("hub/api/")).json()["version"]
    s, res = hub_login(hub, name, password, session=s)
    assert res.status_code == 302, res.text[:300]
    assert res.headers["location"].startswith("/jhub/")
    hub_spawn(s, hub, name)
    lab = hub_open_server(s, hub, name)
    assert lab.url.startswith(hub.url(f"user/{name}/"))
    kernel = hub_start_kernel(s, hub, name)
    assert hub_execute(s, hub, name, kernel, "1+1") == "2"
    # Nothing answers outside the base URL but the redirect to it.
    assert s.get(f"https://{hub.domain}:{hub.https_port}/hub/api/", allow_redirects=False).status_code == 404


def _pids(hub):
    return {p["name"]: p["pid"] for p in hub.status()["programs"]}


def test_edits_by_provision_restart_the_hub_only(hub):
    before = _pids(hub)
    res = hub.dk("provision", "--idle-timeout", str(IDLE_TIMEOUT), "--default-url", "/tree")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"idle servers are stopped after {IDLE_TIMEOUT} s" in res.stdout
    spec = (hub.state_dir / "deploykit.toml").read_text()
    hub_section = spec.split("[hub]", 1)[1].split("\n[", 1)[0]
    assert 'default_url = "/tree"' in hub_section
    assert f"idle_timeout = {IDLE_TIMEOUT}" in hub_section
    after = _pids(hub)
    assert after["configurable-http-proxy"] == before["configurable-http-proxy"]
    assert after["jupyterhub"] != before["jupyterhub"]
    config = (hub.state_dir / "jupyterhub" / "jupyterhub_config.py").read_text()
    assert "jupyterhub_idle_culler" in config and "c.Spawner.default_url = '/tree'" in config
    # The culler holds exactly what culling needs, not admin.
    assert "'list:users', 'read:users:activity', 'read:servers', 'delete:servers'" in config.replace('"', "'")


def test_idle_server_is_culled_and_can_start_again(hub, user):
    name, password = user
    s, res = hub_login(hub, name, password)
    assert res.status_code == 302
    if hub_server(s, hub, name) is None:
        hub_spawn(s, hub, name)
    # Left alone, the server goes: the culler stops it, the user stays.
    wait_until(lambda: hub_server(s, hub, name) is None, timeout=IDLE_TIMEOUT * 6, interval=1,
               what="the idle server to be culled")
    assert hub_api(s, hub, "GET", f"users/{name}").status_code == 200
    hub_spawn(s, hub, name)
    lab = hub_open_server(s, hub, name)
    assert lab.status_code == 200
    kernel = hub_start_kernel(s, hub, name)
    assert hub_execute(s, hub, name, kernel, "6*7") == "42"
