"""Issue 8, test 4: `deploykit doctor` finds what commonly breaks Jupyter behind a proxy.

One real deployment; each test breaks one thing the way it breaks in real life (a program
stopped, nginx's config edited by hand, a certificate about to expire, a port taken by another
process), checks that doctor names it with a fix, then repairs it with `deploykit reload` and
checks doctor is satisfied again. doctor runs in-process (CliRunner) where test domains resolve
to 127.0.0.1; the real command line is checked at the end.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket

import pytest
from click.testing import CliRunner
from support import dk, wait_until

from deploykit import certs
from deploykit.cli import cli
from deploykit.nginx import Nginx
from deploykit.paths import local_paths
from deploykit.supervisor import Supervisor

pytestmark = pytest.mark.real

EXPECTED_CHECKS = {"supervisord", "programs", "nginx", "ports", "spec", "permissions", "certificate", "https",
                   "host-origin", "websocket", "dns", "clock", "disk"}


def doctor(dep) -> tuple[int, dict]:
    res = CliRunner().invoke(cli, ["doctor", "--json", "--state-dir", str(dep.state_dir)])
    assert res.exit_code in (0, 1), res.output
    return res.exit_code, json.loads(res.output)


def findings(report: dict, name: str | None = None) -> list[dict]:
    return [c for c in report["checks"] if c["status"] == "finding" and (name is None or c["name"] == name)]


def supervisor(dep):
    return Supervisor(local_paths(dep.state_dir)).rpc().supervisor


def nginx_pid(dep) -> int:
    return int((dep.state_dir / "run" / "nginx.pid").read_text())


def hup_nginx(dep) -> None:
    """What an operator does after editing nginx's files: reload it (new workers read them)."""
    before = set(_children(nginx_pid(dep)))
    os.kill(nginx_pid(dep), signal.SIGHUP)
    wait_until(lambda: set(_children(nginx_pid(dep))) - before, timeout=20, what="nginx to reload")


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def repair(dep) -> None:
    res = dep.dk("reload")
    assert res.returncode == 0, res.stdout + res.stderr
    wait_until(lambda: doctor(dep)[0] == 0, timeout=60, what="doctor to find nothing after the repair")


def test_a_healthy_deployment_has_no_findings(notebook):
    code, report = doctor(notebook)
    assert code == 0, findings(report)
    assert report["healthy"] is True and report["findings"] == 0
    assert {c["name"] for c in report["checks"]} == EXPECTED_CHECKS
    ok = {c["name"] for c in report["checks"] if c["status"] == "ok"}
    assert {"programs", "nginx", "ports", "spec", "websocket", "https", "host-origin", "certificate", "dns"} <= ok


def test_finds_a_stopped_jupyter_and_its_port_taken_by_another_process(notebook):
    supervisor(notebook).stopProcess("jupyter", True)
    code, report = doctor(notebook)
    assert code == 1
    found = findings(report, "programs")
    assert found and "jupyter is STOPPED" in found[0]["detail"]
    assert "deploykit reload" in found[0]["fix"]
    assert findings(report, "https"), "HTTPS through nginx fails too (502)"

    # While it is stopped, another process takes its port: Jupyter could not start again.
    port = _jupyter_port(notebook)
    squatter = socket.socket()
    try:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        code, report = doctor(notebook)
        assert code == 1
        ports = [c for c in findings(report, "ports") if f"port {port} " in c["detail"]]
        assert ports, report
        assert f"pid {os.getpid()}" in ports[0]["detail"] and "internal.jupyter_port" in ports[0]["detail"]
        assert "free port" in ports[0]["fix"]
    finally:
        squatter.close()
    repair(notebook)


def test_finds_nginx_config_edited_to_drop_the_upgrade_header(notebook):
    proxy_conf = notebook.state_dir / "nginx" / "snippets" / "proxy.conf"
    text = proxy_conf.read_text()
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    proxy_conf.write_text(text.replace("proxy_set_header Upgrade $http_upgrade;\n", ""))
    hup_nginx(notebook)
    code, report = doctor(notebook)
    assert code == 1
    ws = findings(report, "websocket")
    assert ws and "Upgrade header is not passed on" in ws[0]["detail"], report
    assert "deploykit reload" in ws[0]["fix"]
    drift = findings(report, "spec")
    assert drift and str(proxy_conf) in drift[0]["detail"] and "edited" in drift[0]["detail"]
    repair(notebook)
    assert "proxy_set_header Upgrade $http_upgrade;" in proxy_conf.read_text()


def test_finds_nginx_passing_another_host_than_the_browser_sent(notebook):
    proxy_conf = notebook.state_dir / "nginx" / "snippets" / "proxy.conf"
    text = proxy_conf.read_text()
    proxy_conf.write_text(text.replace("proxy_set_header Host $http_host;", "proxy_set_header Host $proxy_host;"))
    hup_nginx(notebook)
    code, report = doctor(notebook)
    assert code == 1
    found = findings(report, "host-origin")
    assert found and "Origin" in found[0]["detail"], report
    assert "$http_host" in found[0]["fix"]
    repair(notebook)


def test_finds_a_certificate_expiring_in_3_days(notebook):
    tls = notebook.state_dir / "tls" / "self-signed"
    now = dt.datetime.now(dt.timezone.utc)
    cert_pem, key_pem = certs.make_self_signed(notebook.domain, now=now - dt.timedelta(days=87),
                                               not_after=now + dt.timedelta(days=3, hours=1))
    (tls / "key.pem").write_bytes(key_pem)
    (tls / "cert.pem").write_bytes(cert_pem)
    hup_nginx(notebook)
    code, report = doctor(notebook)
    assert code == 1
    found = findings(report, "certificate")
    assert found and "expires in 3 days" in found[0]["detail"], report
    assert "deploykit reload" in found[0]["fix"]
    repair(notebook)  # a self-signed certificate with under 30 days left is replaced
    assert certs.read_cert_info((tls / "cert.pem").read_bytes()).days_left() > 300


def _jupyter_port(dep) -> int:
    import tomllib

    return tomllib.loads((dep.state_dir / "deploykit.toml").read_text())["internal"]["jupyter_port"]


def test_real_cli_exit_codes_and_text(notebook, tmp_path):
    # Outside the test process jupyter.test resolves nowhere: a real finding, and exit 1.
    res = dk("doctor", "--state-dir", notebook.state_dir)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FINDING  dns" in res.stdout and "fix:" in res.stdout
    report = json.loads(dk("doctor", "--json", "--state-dir", notebook.state_dir).stdout)
    assert [c["name"] for c in findings(report)] == ["dns"]
    missing = dk("doctor", "--state-dir", tmp_path / "none")
    assert missing.returncode == 2 and "no deployment there" in missing.stderr


def test_finds_the_https_port_taken_while_nginx_is_stopped(notebook):
    # Last: it leaves nginx stopped (the fixture's teardown stops the rest).
    assert Nginx(local_paths(notebook.state_dir), shutil.which("nginx") or "/usr/sbin/nginx").apply_stop()
    squatter = socket.socket()
    try:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", notebook.https_port))
        squatter.listen()
        code, report = doctor(notebook)
        assert code == 1
        names = {c["name"] for c in findings(report)}
        assert {"nginx", "ports", "https"} <= names, report
        ports = [c for c in findings(report, "ports") if f"port {notebook.https_port} " in c["detail"]]
        assert ports and f"pid {os.getpid()}" in ports[0]["detail"]
    finally:
        squatter.close()
