"""Issue 4, fast checks without daemons: the ACME preflight against real loopback HTTP servers,
chain checks, renewal scheduling files, and how certbot's failures are summarised."""

from __future__ import annotations

import datetime as dt
import http.server
import socket
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support import free_port

from deploykit import acme, certs
from deploykit.errors import OperationFailed
from deploykit.host import Host
from deploykit.paths import local_paths, system_paths
from deploykit.spec import build_spec

TOKEN_PATH = "/.well-known/acme-challenge/tok"


class _Server:
    """A plain HTTP server on one loopback address, serving body at TOKEN_PATH (404 elsewhere)."""

    def __init__(self, address: str, port: int, body: bytes | None):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if body is not None and self.path == TOKEN_PATH:
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((address, port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    started = []

    def start(address, port, body):
        s = _Server(address, port, body)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


@pytest.fixture
def resolve_to(monkeypatch):
    """Make one name resolve to one loopback address (or fail) in this process."""
    real = socket.getaddrinfo

    def set_(name, address):
        def fake(host, *args, **kwargs):
            if host == name:
                if address is None:
                    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
                host = address
            return real(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", fake)

    return set_


def test_preflight_passes_when_the_token_is_served(servers, resolve_to):
    port = free_port()
    servers("127.0.0.1", port, b"secret")
    resolve_to("ok.example.org", "127.0.0.1")
    assert acme.probe_challenge("ok.example.org", port, TOKEN_PATH, b"secret") is None


def test_preflight_names_a_domain_that_does_not_resolve(resolve_to):
    resolve_to("gone.example.org", None)
    problem = acme.probe_challenge("gone.example.org", 80, TOKEN_PATH, b"secret")
    assert "gone.example.org does not resolve" in problem and "DNS" in problem


def test_preflight_names_dns_pointing_elsewhere(servers, resolve_to):
    port = free_port()
    servers("127.0.0.1", port, b"secret")      # "this nginx": serves the token
    servers("127.0.0.2", port, b"other")       # "another server" the name points to
    resolve_to("elsewhere.example.org", "127.0.0.2")
    problem = acme.probe_challenge("elsewhere.example.org", port, TOKEN_PATH, b"secret")
    assert "DNS for elsewhere.example.org points to 127.0.0.2, which is not this server" in problem


def test_preflight_names_an_unreachable_port(servers, resolve_to):
    port = free_port()
    servers("127.0.0.1", port, b"secret")      # this nginx answers on loopback...
    resolve_to("blocked.example.org", "127.0.0.2")  # ...but nothing answers at the public address
    problem = acme.probe_challenge("blocked.example.org", port, TOKEN_PATH, b"secret")
    assert f"port {port} is unreachable at 127.0.0.2" in problem
    assert "firewall" in problem


def test_preflight_names_a_webroot_nginx_does_not_serve(servers, resolve_to):
    port = free_port()
    servers("127.0.0.1", port, None)
    resolve_to("noroot.example.org", "127.0.0.1")
    problem = acme.probe_challenge("noroot.example.org", port, TOKEN_PATH, b"secret")
    assert "answered HTTP 404 instead of the token" in problem


def test_check_challenge_path_removes_its_token(tmp_path, resolve_to):
    resolve_to("nothing.example.org", "127.0.0.1")
    with pytest.raises(OperationFailed, match="not asking the CA"):
        acme.check_challenge_path("nothing.example.org", free_port(), tmp_path)
    assert list((tmp_path / ".well-known" / "acme-challenge").iterdir()) == []


# -- chains ------------------------------------------------------------------------------------

def _ca(name, signer=None):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = (signer[0].subject, signer[1]) if signer else (subject, key)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))
    return cert, key


def test_chain_checks():
    root = _ca("root")
    inter = _ca("intermediate", root)
    leaf = _ca("leaf", inter)
    assert certs.chain_problem([leaf[0], inter[0], root[0]], []) is None
    assert certs.chain_problem([leaf[0], inter[0]], [root[0]]) is None  # root trusted by the system
    assert "incomplete chain" in certs.chain_problem([leaf[0]], [root[0]])
    assert "incomplete chain" in certs.chain_problem([leaf[0], inter[0]], [])
    assert "not signed by certificate 2" in certs.chain_problem([leaf[0], root[0], inter[0]], [])
    assert certs.chain_problem([root[0]], []) is None  # a self-signed certificate is its own chain


# -- renewal scheduling ----------------------------------------------------------------------------

def _spec(target="system", mode="letsencrypt"):
    tls = {"mode": mode, "email": "ops@example.org"}
    if mode == "manual":
        tls.update(cert="/etc/ssl/x.pem", key="/etc/ssl/x.key")
    return build_spec({"deployment": {"domain": "jupyter.example.org", "target": target}, "tls": tls})


def _host(systemd: bool) -> Host:
    return Host(python="/usr/bin/python3", euid=0, user="root", home="/root", ipv6=False, nginx="/usr/sbin/nginx",
                systemd=systemd)


def test_system_target_without_systemd_gets_a_cron_entry(tmp_path):
    paths = system_paths(tmp_path, tmp_path / "var/lib/deploykit")
    [f] = acme.build_renewal_files(_spec(), paths, _host(systemd=False))
    assert f.path == tmp_path / "etc/cron.d/deploykit-certbot" and f.mode == 0o644
    line = [ln for ln in f.content.decode().splitlines() if ln and ln[0].isdigit()][0]
    fields = line.split()
    assert 0 <= int(fields[0]) < 60 and fields[2:6] == ["*", "*", "*", "root"]
    assert (f"/usr/bin/python3 -m deploykit cert renew --state-dir {tmp_path}/var/lib/deploykit --root {tmp_path} "
            "--quiet") in line


def test_system_target_with_systemd_gets_a_timer(tmp_path):
    paths = system_paths(tmp_path, tmp_path / "var/lib/deploykit")
    service, timer = acme.build_renewal_files(_spec(), paths, _host(systemd=True))
    assert service.path.name == "deploykit-certbot.service" and timer.path.name == "deploykit-certbot.timer"
    assert "ExecStart=/usr/bin/python3 -m deploykit cert renew" in service.content.decode()
    assert "OnCalendar=" in timer.content.decode() and "WantedBy=timers.target" in timer.content.decode()


def test_no_schedule_for_local_or_other_modes(tmp_path):
    assert acme.build_renewal_files(_spec("local"), local_paths(tmp_path), _host(False)) == []
    paths = system_paths(tmp_path, tmp_path / "state")
    assert acme.build_renewal_files(_spec(mode="self-signed"), paths, _host(False)) == []


def test_renewal_configured_needs_the_hook_and_on_the_system_target_a_schedule(tmp_path):
    spec = _spec()
    paths = system_paths(tmp_path, tmp_path / "var/lib/deploykit")
    host = _host(False)
    assert acme.renewal_configured(spec, paths) is False
    conf = acme.renewal_conf_path(paths, "jupyter.example.org")
    conf.parent.mkdir(parents=True)
    conf.write_text(f"[renewalparams]\nrenew_hook = {acme.deploy_hook_command(paths, host)}\n")
    assert acme.read_renewal_hook(paths, "jupyter.example.org")
    assert acme.renewal_configured(spec, paths) is False  # no cron entry yet
    [cron] = acme.build_renewal_files(spec, paths, host)
    cron.path.parent.mkdir(parents=True)
    cron.path.write_bytes(cron.content)
    assert acme.renewal_configured(spec, paths) is True
    assert acme.read_renewal_schedule(spec, paths) == f"cron entry {cron.path}"
    assert acme.renewal_configured(_spec(mode="manual"), paths) is False


def test_certbot_dirs_follow_the_target(tmp_path):
    local = acme.certbot_dirs(local_paths(tmp_path))
    assert local.config == tmp_path / "certbot" and local.log_file == tmp_path / "certbot/logs/letsencrypt.log"
    system = acme.certbot_dirs(system_paths(tmp_path))
    assert system.config == tmp_path / "etc/letsencrypt" and system.work == tmp_path / "var/lib/letsencrypt"
    assert system.log_file == tmp_path / "var/log/letsencrypt/letsencrypt.log"


def test_certbot_failure_summary_keeps_the_ca_detail():
    out = """Saving debug log to /x/letsencrypt.log
Requesting a certificate for a.example.org

Certbot failed to authenticate some domains (authenticator: webroot). The Certificate Authority reported these problems:
  Domain: a.example.org
  Type:   connection
  Detail: 127.0.0.1: Fetching http://a.example.org/.well-known/acme-challenge/x: Connection refused

Hint: The Certificate Authority failed to download the temporary challenge files created by Certbot.

Some challenges have failed.
Ask for help or search for solutions at https://community.letsencrypt.org. See the logfile /x/letsencrypt.log.
"""
    summary = acme.summarize_certbot_output(out)
    assert summary.startswith("Domain: a.example.org; Type:   connection; Detail: 127.0.0.1: Fetching")
    assert acme.summarize_certbot_output("An unexpected error occurred:\nConnection refused\n") == \
        "An unexpected error occurred: Connection refused"


def test_cert_status_when_tls_is_off(tmp_path):
    from deploykit.certstatus import build_cert_status, render_cert_status

    spec = build_spec({"deployment": {"domain": "jupyter.test", "target": "local"}, "tls": {"mode": "off"}})
    s = build_cert_status(spec, local_paths(tmp_path))
    assert s["mode"] == "off" and s["path"] is None and s["renewal"] is None and s["ok"] is True
    assert render_cert_status(s) == "certificate: none (TLS is off)"


def test_bad_acme_ca_bundle_exits_2_and_creates_nothing(tmp_path):
    from support import dk

    bundle = tmp_path / "bundle.pem"
    bundle.write_text("not a certificate\n")
    for given in (bundle, tmp_path / "missing.pem"):
        res = dk("provision", "--target", "local", "--state-dir", tmp_path / "state", "--domain", "jupyter.test",
                 "--password-stdin", "--tls", "letsencrypt", "--email", "ops@example.com",
                 "--acme-server", "https://localhost:14000/dir", "--acme-ca-bundle", given, input="x" * 16 + "\n")
        assert res.returncode == 2, res.stderr
        assert "--acme-ca-bundle" in res.stderr and len(res.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "state").exists()
