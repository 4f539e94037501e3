"""The pure core stays pure: building the desired state and the plan reads nothing of the
deployment or the host (only installed code and package data: templates, imports, ipykernel's
logos), writes nothing and starts no process. An audit hook watches, for each mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import deploykit
from deploykit.desired import build_desired_state
from deploykit.host import Host
from deploykit.materials import Materials
from deploykit.paths import local_paths, system_paths
from deploykit.plan import DaemonFacts, build_plan, render_plan
from deploykit.spec import build_spec

PACKAGE = Path(deploykit.__file__).resolve().parent
INSTALLED = [PACKAGE, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()]
HOST = Host(python="/opt/env/bin/python3", euid=0, user="root", home="/root", ipv6=True,
            nginx="/usr/sbin/nginx", systemd=False)
_events: list[tuple[str, tuple]] | None = None


def _hook(event, args):
    if _events is not None and event in {"open", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn",
                                         "socket.connect", "os.remove", "os.rename", "os.mkdir"}:
        _events.append((event, args))


sys.addaudithook(_hook)


def _materials(paths, spec):
    secrets = {paths.secret("notebook-password.hash"): b"argon2:example\n",
               paths.secret("jupyter-cookie-secret"): b"00\n"}
    if spec.deployment.mode == "hub":
        from deploykit import hub

        secrets = {p: b"00\n" for p in [hub.proxy_token_path(paths)]}
    return Materials(secrets=secrets, cert_path=paths.tls_dir / "cert.pem", key_path=paths.tls_dir / "key.pem")


CASES = {
    "notebook-local": ({"deployment": {"domain": "jupyter.test"}}, "local"),
    "notebook-local-base-url": ({"deployment": {"domain": "jupyter.test"}, "http": {"base_url": "/j/"},
                                 "kernels": [{"name": "a", "python": "/opt/a/bin/python", "display_name": "A"}]},
                                "local"),
    "hub-local": ({"deployment": {"domain": "hub.test", "mode": "hub"}, "hub": {"admins": ["alice"]}}, "local"),
    "notebook-system": ({"deployment": {"domain": "jupyter.example.com", "target": "system"},
                         "tls": {"mode": "letsencrypt", "email": "a@example.com"}}, "system"),
}


@pytest.mark.parametrize("name", CASES)
def test_building_and_planning_touch_nothing(name, tmp_path):
    global _events
    raw, target = CASES[name]
    raw = {**raw, "internal": {"jupyter_port": 18888, "hub_port": 18081, "proxy_port": 18000,
                               "proxy_api_port": 18001}}
    spec = build_spec(raw)
    paths = local_paths(tmp_path / "state") if target == "local" else system_paths(tmp_path)
    materials = _materials(paths, spec)
    from deploykit.render import environment

    environment()  # the Jinja environment is built once per process; that is not the core's doing
    account = None
    if target == "system":
        from deploykit.system import ServiceAccount

        account = ServiceAccount("jupyter", tmp_path / "home/jupyter", "jupyter", None)
    _events = []
    try:
        desired = build_desired_state(spec, paths, HOST, materials, account=account)
        plan = build_plan(desired, {}, [], DaemonFacts(False, False, {}))
        text = render_plan(plan)
    finally:
        seen, _events = _events, None
    def installed_read(event, args):
        if event != "open" or not isinstance(args[0], str) or (args[1] or "r")[0] != "r":
            return False
        where = Path(args[0]).resolve()
        return any(where.is_relative_to(root) for root in INSTALLED)

    outside = [(e, a) for e, a in seen if not installed_read(e, a)]
    assert not outside, outside
    assert desired.files and "nginx: start" in text
