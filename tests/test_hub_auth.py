"""Issue 3: the other authenticators on one real hub. First native (sign-up, admin approval), then
the same deployment switched to shared-password by provision. Hub users here are names, not
system accounts: each server runs as a jupyter-<name> account made on first spawn.
"""

from __future__ import annotations

import os
import pwd
import stat
import uuid

import pytest
from support import (
    cookie_for, hub_api, hub_execute, hub_login, hub_open_server, hub_spawn, hub_start_kernel, provision_hub,
    remove_system_user,
)

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(os.geteuid() != 0, reason="hub mode needs root (accounts, servers run as users)")]

ADMIN = f"dkna{uuid.uuid4().hex[:8]}"
USER = f"dknu{uuid.uuid4().hex[:8]}"
GUEST = f"dkns{uuid.uuid4().hex[:8]}"
SHARED_PASSWORD = f"shared-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    dep, res = provision_hub(tmp_path_factory.mktemp("auth") / "state",
                             extra=["--authenticator", "native", "--admin", ADMIN, "--idle-timeout", "0"])
    dep.provision_output = res.stdout
    yield dep
    dep.stop()
    for name in (ADMIN, USER, GUEST):
        remove_system_user(f"jupyter-{name}")


def signup(hub, name: str, password: str) -> str:
    s = hub.session()
    s.get(hub.url("hub/signup")).raise_for_status()
    res = s.post(hub.url("hub/signup"), data={
        "username": name, "signup_password": password, "signup_password_confirmation": password,
        "_xsrf": cookie_for(s, "_xsrf", f"{hub.base_url}hub/")}, headers={"Referer": hub.url("hub/signup"),
                                                                         "Origin": hub.origin})
    assert res.status_code == 200, res.text[:300]
    return res.text


def test_native_says_how_to_sign_up(hub):
    assert "hub/signup" in hub.provision_output and "hub/authorize" in hub.provision_output
    assert ADMIN in hub.provision_output


def test_native_sign_up_needs_admin_approval(hub):
    admin_pw, user_pw = f"adm-{uuid.uuid4().hex}", f"usr-{uuid.uuid4().hex}"
    assert "successful" in signup(hub, ADMIN, admin_pw)           # admins are approved up front
    assert "sent to the admin" in signup(hub, USER, user_pw)
    _, res = hub_login(hub, USER, user_pw)
    assert res.status_code != 302                                  # not approved yet
    admin, res = hub_login(hub, ADMIN, admin_pw)
    assert res.status_code == 302, res.text[:300]
    assert admin.get(hub.url(f"hub/authorize/{USER}")).status_code == 200
    user, res = hub_login(hub, USER, user_pw)
    assert res.status_code == 302, res.text[:300]
    hub_spawn(user, hub, USER)
    hub_open_server(user, hub, USER)
    kernel = hub_start_kernel(user, hub, USER)
    whoami = hub_execute(user, hub, USER, kernel, "import os, pwd; print(pwd.getpwuid(os.getuid()).pw_name, os.getcwd())")
    account = pwd.getpwnam(f"jupyter-{USER}")
    assert whoami == f"jupyter-{USER} {account.pw_dir}"
    assert account.pw_uid != 0
    assert hub_api(user, hub, "GET", "users").status_code == 403
    assert hub_api(admin, hub, "GET", "users").status_code == 200


def test_switch_to_shared_password_by_provision(hub):
    res = hub.dk("provision", "--authenticator", "shared-password", "--allow-all", "--shared-password-stdin",
                 input=SHARED_PASSWORD + "\n")
    assert res.returncode == 0, res.stdout + res.stderr
    assert SHARED_PASSWORD not in res.stdout + res.stderr
    secrets = hub.state_dir / "secrets"
    assert (secrets / "hub-shared-password").read_text() == SHARED_PASSWORD + "\n"
    for name in ("hub-shared-password", "hub-admin-password"):
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600
    assert SHARED_PASSWORD not in (hub.state_dir / "jupyterhub" / "jupyterhub_config.py").read_text()
    assert "admin password in" in res.stdout

    _, res = hub_login(hub, GUEST, "wrong-password")
    assert res.status_code == 403
    guest, res = hub_login(hub, GUEST, SHARED_PASSWORD)
    assert res.status_code == 302, res.text[:300]
    hub_spawn(guest, hub, GUEST)
    hub_open_server(guest, hub, GUEST)
    kernel = hub_start_kernel(guest, hub, GUEST)
    assert hub_execute(guest, hub, GUEST, kernel, "import getpass; print(getpass.getuser())") == f"jupyter-{GUEST}"
    assert hub_api(guest, hub, "GET", "users").status_code == 403

    # Admins do not get in with the users' password, only with the generated admin one.
    _, res = hub_login(hub, ADMIN, SHARED_PASSWORD)
    assert res.status_code == 403
    admin_password = (secrets / "hub-admin-password").read_text().strip()
    assert len(admin_password) >= 32
    admin, res = hub_login(hub, ADMIN, admin_password)
    assert res.status_code == 302
    assert hub_api(admin, hub, "GET", "users").status_code == 200


def test_reload_keeps_the_shared_password(hub):
    before = (hub.state_dir / "secrets" / "hub-shared-password").read_bytes()
    res = hub.dk("reload")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no changes" in res.stdout
    assert (hub.state_dir / "secrets" / "hub-shared-password").read_bytes() == before
