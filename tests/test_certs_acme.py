"""Issue 4: Let's Encrypt through certbot, against a real ACME server (Pebble) and real nginx.

Pebble listens on loopback with a TLS certificate made here; its DNS is pebble-challtestsrv,
which answers 127.0.0.1 for every name, so its http-01 validation reaches this nginx. The
deploykit CLI (and the certbot it runs) resolve the test domain through a sitecustomize
(support.loopback_resolver_env), like the test process does through conftest.py.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support import (PASSWORD, Deployment, dk, free_port, free_ports, kill_leftovers, loopback_resolver_env,
                     wait_until)

pytestmark = pytest.mark.real

DOMAIN = "acme.jupyter.test"
EMAIL = "ops@example.com"


# -- Pebble -----------------------------------------------------------------------------------

def make_ca_and_leaf(directory: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signs (for Pebble's own HTTPS): ca.pem, cert.pem, key.pem."""
    import ipaddress

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deploykit test Pebble TLS CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n) for n in names]
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "cert.pem").write_bytes(leaf.public_bytes(pem))
    (directory / "key.pem").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return directory / "ca.pem", directory / "cert.pem", directory / "key.pem"


def _wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    def up():
        assert proc.poll() is None, f"{what} exited: {proc.stdout.read() if proc.stdout else ''}"
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    wait_until(up, timeout=30, what=what)


class Pebble:
    """Pebble and its DNS (pebble-challtestsrv) on free loopback ports."""

    def __init__(self, directory: Path, http_port: int):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.http_port = http_port
        self.port, self.mgmt_port, self.tls_port, self.dns_port, self.dns_mgmt_port = free_ports(5)
        self.ca_bundle, cert, key = make_ca_and_leaf(self.dir, ["localhost", "127.0.0.1"])
        self.config = self.dir / "pebble-config.json"
        self.config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}", "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(cert), "privateKey": str(key), "httpPort": http_port, "tlsPort": self.tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
        self.procs: list[subprocess.Popen] = []
        self.logs: list = []

    @property
    def directory_url(self) -> str:
        return f"https://localhost:{self.port}/dir"

    def start(self) -> "Pebble":
        log = open(self.dir / "challtestsrv.log", "ab")
        self.logs.append(log)
        # Only its DNS: every name is 127.0.0.1 (no AAAA), its own challenge servers are off.
        dns = subprocess.Popen(
            ["pebble-challtestsrv", "-management", f"127.0.0.1:{self.dns_mgmt_port}",
             "-dns01", f"127.0.0.1:{self.dns_port}", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
             "-http01", "", "-https01", "", "-tlsalpn01", ""],
            stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(dns)
        _wait_port(self.dns_mgmt_port, dns, "pebble-challtestsrv")
        env = {"PATH": "/usr/bin:/bin", "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
               # A real http-01 validation for every order, renewals included.
               "PEBBLE_AUTHZREUSE": "0"}
        log = open(self.dir / "pebble.log", "ab")
        self.logs.append(log)
        pebble = subprocess.Popen(["pebble", "-config", str(self.config), "-dnsserver", f"127.0.0.1:{self.dns_port}"],
                                  stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append(pebble)
        _wait_port(self.port, pebble, "pebble")
        return self

    def stop_acme(self) -> None:
        """Stop Pebble itself (its DNS keeps running)."""
        pebble = self.procs[-1]
        pebble.terminate()
        pebble.wait(timeout=20)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        kill_leftovers(self.dir)
        for log in self.logs:
            log.close()

    def management(self, path: str) -> bytes:
        s = requests.Session()
        s.trust_env = False
        res = s.get(f"https://localhost:{self.mgmt_port}{path}", verify=str(self.ca_bundle), timeout=10)
        res.raise_for_status()
        return res.content

    def write_roots(self, path: Path) -> Path:
        """Pebble's (randomly generated) root: the one trust anchor for what it issued."""
        path.write_bytes(self.management("/roots/0"))
        return path

    def log(self) -> str:
        return (self.dir / "pebble.log").read_text(errors="replace")


# -- helpers -----------------------------------------------------------------------------------

def served_chain(domain: str, port: int, cafile: Path | None = None) -> x509.Certificate:
    """The leaf nginx serves for domain; verified against cafile alone when given."""
    if cafile:
        ctx = ssl.create_default_context(cafile=str(cafile))
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=domain) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def get_api(domain: str, port: int, cafile: Path) -> tuple[int, int]:
    """One HTTPS request on a new connection, verified against cafile: (status, served serial)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=domain) as tls:
            serial = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number
            tls.sendall(f"GET /api HTTP/1.1\r\nHost: {domain}:{port}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    return int(data.split(b" ", 2)[1]), serial


def archive_certs(dep: Deployment) -> list[Path]:
    return sorted((dep.state_dir / "certbot" / "archive" / dep.domain).glob("cert*.pem"))


def acme_provision(dep: Deployment, pebble: Pebble, env: dict, *extra) -> subprocess.CompletedProcess:
    return dk("provision", "--target", "local", "--state-dir", dep.state_dir, "--domain", dep.domain,
              "--http-port", dep.http_port, "--https-port", dep.https_port, "--password-stdin",
              "--tls", "letsencrypt", "--email", EMAIL, "--acme-server", pebble.directory_url,
              "--acme-ca-bundle", pebble.ca_bundle, *extra, input=PASSWORD + "\n", env=env)


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pebble_and_dep(tmp_path_factory):
    base = tmp_path_factory.mktemp("acme")
    http_port, https_port = free_ports(2)
    pebble = Pebble(base / "pebble", http_port).start()
    dep = Deployment(base / "state", DOMAIN, http_port, https_port)
    env = loopback_resolver_env(base / "resolver", {DOMAIN: "127.0.0.1"})
    try:
        res = acme_provision(dep, pebble, env)
        assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{pebble.log()[-3000:]}"
        roots = pebble.write_roots(base / "pebble-root.pem")
        yield pebble, dep, env, roots, res
    finally:
        dep.stop()
        pebble.stop()


# -- tests ----------------------------------------------------------------------------------------

def test_pebble_validates_http01_through_nginx_and_nginx_serves_its_certificate(pebble_and_dep):
    pebble, dep, env, roots, res = pebble_and_dep
    # Verified against Pebble's root alone: nginx serves a chain issued by Pebble's CA.
    leaf = served_chain(dep.domain, dep.https_port, cafile=roots)
    assert leaf.subject != leaf.issuer
    assert "Pebble" in leaf.issuer.rfc4514_string()
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [dep.domain]
    issued = (dep.state_dir / "certbot" / "live" / dep.domain / "fullchain.pem").read_bytes()
    assert x509.load_pem_x509_certificates(issued)[0] == leaf
    # Pebble really validated http-01 (not an always-valid shortcut) and nginx answered it.
    assert f"Attempting to validate w/ HTTP: http://{dep.domain}:{dep.http_port}/.well-known/acme-challenge/" in pebble.log()
    access = (dep.state_dir / "logs" / "nginx-access.log").read_text().splitlines()
    assert [ln for ln in access if "GET /.well-known/acme-challenge/" in ln and '" 200 ' in ln and "Pebble-VA" in ln]
    # Jupyter answers through nginx with the issued certificate.
    status, _ = get_api(dep.domain, dep.https_port, roots)
    assert status == 200
    # The bootstrap certificate is kept outside certbot's live/ directory.
    assert (dep.state_dir / "tls" / "self-signed" / "cert.pem").is_file()
    assert "preflight" in res.stdout and "certbot" in res.stdout


def test_renew_force_runs_the_deploy_hook_and_no_request_fails_during_the_switch(pebble_and_dep):
    pebble, dep, env, roots, _ = pebble_and_dep
    old = served_chain(dep.domain, dep.https_port, cafile=roots).serial_number
    results: list[tuple[int, int] | str] = []
    done = threading.Event()

    def hammer():
        # Bounded in count and time; a fresh TLS connection each time sees the switch.
        deadline = time.monotonic() + 240
        after_done = 0
        while len(results) < 5000 and time.monotonic() < deadline and after_done < 30:
            try:
                results.append(get_api(dep.domain, dep.https_port, roots))
            except Exception as exc:  # noqa: BLE001 - every failure is reported below
                results.append(f"{type(exc).__name__}: {exc}")
            if done.is_set():
                after_done += 1

    t = threading.Thread(target=hammer)
    t.start()
    try:
        wait_until(lambda: len(results) >= 5, timeout=60, what="requests before the renewal")
        res = dk("cert", "renew", "--force", "--state-dir", dep.state_dir, env=env)
    finally:
        done.set()
        t.join(timeout=300)
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    failures = [r for r in results if isinstance(r, str) or r[0] != 200]
    assert not failures, failures[:5]
    new = served_chain(dep.domain, dep.https_port, cafile=roots).serial_number
    assert new != old
    serials = [r[1] for r in results]
    assert serials[0] == old and serials[-1] == new
    # The deploy hook ran (certbot ran it after the renewal) and reloaded nginx.
    hook_log = (dep.state_dir / "logs" / "certbot-deploy-hook.log").read_text()
    assert f"nginx reloaded: serves serial {new:x}" in hook_log
    assert len(archive_certs(dep)) == 2
    assert "renewed" in res.stdout


def test_second_provision_does_not_ask_for_a_new_certificate(pebble_and_dep):
    pebble, dep, env, roots, _ = pebble_and_dep
    before = archive_certs(dep)
    serial = served_chain(dep.domain, dep.https_port).serial_number
    orders = pebble.log().count("POST /order-plz") or pebble.log().count("new-order")
    res = acme_provision(dep, pebble, env)
    assert res.returncode == 0, res.stderr
    assert "not asking" in res.stdout
    assert archive_certs(dep) == before
    assert served_chain(dep.domain, dep.https_port).serial_number == serial
    assert (pebble.log().count("POST /order-plz") or pebble.log().count("new-order")) == orders


def test_renew_when_not_due_changes_nothing(pebble_and_dep):
    pebble, dep, env, roots, _ = pebble_and_dep
    before = archive_certs(dep)
    serial = served_chain(dep.domain, dep.https_port).serial_number
    res = dk("cert", "renew", "--state-dir", dep.state_dir, env=env)
    assert res.returncode == 0, res.stderr
    assert "not due" in res.stdout
    assert archive_certs(dep) == before
    assert served_chain(dep.domain, dep.https_port).serial_number == serial


def test_cert_status_json_for_an_issued_certificate(pebble_and_dep):
    pebble, dep, env, roots, _ = pebble_and_dep
    res = dk("cert", "status", "--json", "--state-dir", dep.state_dir, env=env)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    served = served_chain(dep.domain, dep.https_port)
    assert s["mode"] == "letsencrypt" and s["issued"] is True
    assert s["path"] == str(dep.state_dir / "certbot" / "live" / dep.domain / "fullchain.pem")
    assert s["subject"] == served.subject.rfc4514_string()
    assert s["sans"] == [dep.domain]
    assert "Pebble" in s["issuer"]
    assert dt.datetime.fromisoformat(s["not_after"]) == served.not_valid_after_utc
    assert s["days_left"] > 14 and s["warning"] is None
    assert s["serial"] == format(served.serial_number, "x")
    assert s["served"] is True
    assert s["renewal"] is True and "cert renew" in s["renewal_detail"]
    text = dk("cert", "status", "--state-dir", dep.state_dir, env=env)
    assert text.returncode == 0 and "renewal:     configured" in text.stdout
    # `deploykit status` reports the same certificate, and the renewal.
    st = json.loads(dk("status", "--json", "--state-dir", dep.state_dir, env=env).stdout)
    assert st["certificate"]["serial"] == s["serial"] and st["certificate"]["renewal"] is True


def test_deploy_hook_alone_does_nothing_when_nginx_already_serves_the_certificate(pebble_and_dep):
    pebble, dep, env, roots, _ = pebble_and_dep
    res = dk("cert", "deploy-hook", "--state-dir", dep.state_dir, env=env)
    assert res.returncode == 0, res.stderr
    assert "nothing to reload" in res.stdout


def test_acme_server_down_exits_1_names_the_log_and_the_old_certificate_stays(pebble_and_dep):
    # Last in this module: Pebble stays stopped.
    pebble, dep, env, roots, _ = pebble_and_dep
    serial = served_chain(dep.domain, dep.https_port).serial_number
    site = (dep.state_dir / "nginx" / "sites" / "deploykit.conf").read_bytes()
    pebble.stop_acme()
    res = dk("cert", "renew", "--force", "--state-dir", dep.state_dir, env=env)
    assert res.returncode == 1, res.stdout
    assert str(dep.state_dir / "certbot" / "logs" / "letsencrypt.log") in res.stderr
    assert "certbot could not renew" in res.stderr
    assert served_chain(dep.domain, dep.https_port).serial_number == serial
    assert (dep.state_dir / "nginx" / "sites" / "deploykit.conf").read_bytes() == site
    assert get_api(dep.domain, dep.https_port, roots)[0] == 200


# -- failures before and during the first issuance ------------------------------------------------

@pytest.fixture(scope="module")
def self_signed_dep(tmp_path_factory):
    base = tmp_path_factory.mktemp("acme-fail")
    http_port, https_port = free_ports(2)
    dep = Deployment(base / "state", "acme-fail.jupyter.test", http_port, https_port)
    env = loopback_resolver_env(base / "resolver", {dep.domain: "127.0.0.1"})
    res = dk("provision", "--target", "local", "--state-dir", dep.state_dir, "--domain", dep.domain,
             "--http-port", http_port, "--https-port", https_port, "--password-stdin", input=PASSWORD + "\n", env=env)
    assert res.returncode == 0, res.stderr
    yield dep, env, base
    dep.stop()


def test_cert_status_json_for_a_self_signed_certificate(self_signed_dep):
    dep, env, _ = self_signed_dep
    res = dk("cert", "status", "--json", "--state-dir", dep.state_dir, env=env)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["mode"] == "self-signed" and s["self_signed"] is True
    assert s["path"] == str(dep.cert)
    assert s["sans"] == [dep.domain] and s["subject"] == s["issuer"] == f"CN={dep.domain}"
    assert 300 < s["days_left"] <= 365 and s["warning"] is None
    assert s["renewal"] is False and "self-signed" in s["renewal_detail"]
    assert s["served"] is True


def test_unresolvable_domain_fails_before_asking_the_ca(self_signed_dep, tmp_path):
    dep, _, _ = self_signed_dep
    env = loopback_resolver_env(tmp_path / "resolver", {dep.domain: None})
    served = served_chain(dep.domain, dep.https_port).serial_number
    res = dk("provision", "--state-dir", dep.state_dir, "--tls", "letsencrypt", "--email", EMAIL,
             "--acme-server", f"https://localhost:{free_port()}/dir", env=env)
    assert res.returncode == 1, res.stdout
    assert f"{dep.domain} does not resolve" in res.stderr and "DNS" in res.stderr
    assert "not asking the CA" in res.stderr
    assert not (dep.state_dir / "certbot" / "logs").exists(), "certbot must not have run"
    assert served_chain(dep.domain, dep.https_port).serial_number == served
    assert not list((dep.state_dir / "acme-webroot" / ".well-known" / "acme-challenge").iterdir())


def test_certbot_failure_exits_1_names_its_log_and_keeps_the_old_certificate(self_signed_dep):
    dep, env, _ = self_signed_dep
    served = served_chain(dep.domain, dep.https_port, cafile=dep.cert).serial_number
    site = (dep.state_dir / "nginx" / "sites" / "deploykit.conf").read_bytes()
    # Nothing listens there: certbot cannot reach the ACME server.
    res = dk("provision", "--state-dir", dep.state_dir, "--tls", "letsencrypt", "--email", EMAIL,
             "--acme-server", f"https://localhost:{free_port()}/dir", env=env)
    assert res.returncode == 1, res.stdout
    log = dep.state_dir / "certbot" / "logs" / "letsencrypt.log"
    assert f"certbot's log: {log}" in res.stderr and log.is_file()
    assert "certbot could not get a certificate" in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 4
    assert served_chain(dep.domain, dep.https_port, cafile=dep.cert).serial_number == served
    assert (dep.state_dir / "nginx" / "sites" / "deploykit.conf").read_bytes() == site
    st = json.loads(dk("cert", "status", "--json", "--state-dir", dep.state_dir, env=env).stdout)
    assert st["mode"] == "letsencrypt" and st["issued"] is False and st["renewal"] is False
    assert st["path"] == str(dep.cert)
