"""Issue 4: bring-your-own certificate (--tls manual) on a real deployment, and certificate health.

A test CA made here signs the operator's certificate; the chain file holds the leaf, then the CA.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support import dk, provision, tree_snapshot

from deploykit import certs

pytestmark = pytest.mark.real

DOMAIN = "manual.jupyter.test"
NOW = dt.datetime.now(dt.timezone.utc)
PEM = serialization.Encoding.PEM


def _key_pem(key) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class OperatorCA:
    def __init__(self, name: str = "deploykit test operator CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(NOW - dt.timedelta(days=400)).not_valid_after(NOW + dt.timedelta(days=400))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def issue(self, names: list[str], not_before: dt.datetime | None = None, not_after: dt.datetime | None = None):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(self.name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(not_before or NOW - dt.timedelta(minutes=5))
                .not_valid_after(not_after or NOW + dt.timedelta(days=90))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        return cert, key

    def files(self, directory: Path, cert, key, with_ca: bool = True, key_pem: bytes | None = None) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        chain = cert.public_bytes(PEM) + (self.cert.public_bytes(PEM) if with_ca else b"")
        (directory / "chain.pem").write_bytes(chain)
        (directory / "key.pem").write_bytes(key_pem if key_pem is not None else _key_pem(key))
        return directory / "chain.pem", directory / "key.pem"


@pytest.fixture(scope="module")
def ca():
    return OperatorCA()


@pytest.fixture(scope="module")
def manual_dep(tmp_path_factory, ca):
    """A deployment with an operator's certificate that has 10 days left."""
    base = tmp_path_factory.mktemp("manual")
    cert, key = ca.issue([DOMAIN, "www." + DOMAIN], not_after=NOW + dt.timedelta(days=10, hours=1))
    chain, key_file = ca.files(base / "operator", cert, key)
    dep, res = provision(base / "state", domain=DOMAIN, extra=["--tls", "manual", "--cert", chain, "--key", key_file])
    yield dep, cert, base
    dep.stop()


def served(dep) -> x509.Certificate:
    return certs.probe_served_cert(dep.domain, dep.https_port)


def test_nginx_serves_the_operators_certificate_from_private_copies(manual_dep):
    dep, cert, _ = manual_dep
    assert served(dep) == cert
    installed = dep.state_dir / "tls" / "manual"
    assert (installed / "privkey.pem").stat().st_mode & 0o777 == 0o600
    assert (installed / "fullchain.pem").stat().st_mode & 0o777 == 0o644
    assert len(x509.load_pem_x509_certificates((installed / "fullchain.pem").read_bytes())) == 2
    st = json.loads(dk("status", "--json", "--state-dir", dep.state_dir).stdout)
    assert st["https"]["ok"] and st["healthy"]


def test_cert_status_json_for_a_manual_certificate_warns_under_14_days(manual_dep, ca):
    dep, cert, _ = manual_dep
    res = dk("cert", "status", "--json", "--state-dir", dep.state_dir)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["mode"] == "manual"
    assert s["path"] == str(dep.state_dir / "tls" / "manual" / "fullchain.pem")
    assert s["subject"] == f"CN={DOMAIN}"
    assert s["sans"] == [DOMAIN, "www." + DOMAIN]
    assert s["issuer"] == "CN=deploykit test operator CA"
    assert dt.datetime.fromisoformat(s["not_after"]) == cert.not_valid_after_utc
    assert s["days_left"] == 10
    assert s["warning"] == "expires in 10 days"
    assert s["renewal"] is False and "manual" in s["renewal_detail"]
    assert s["served"] is True and s["self_signed"] is False
    assert "warning: certificate expires in 10 days" in res.stderr
    # `deploykit status` warns too (under 14 days), and still says healthy: it has not expired.
    res = dk("status", "--state-dir", dep.state_dir)
    assert "WARNING:     certificate expires in 10 days" in res.stdout
    assert "warning: certificate expires in 10 days" in res.stderr
    st = json.loads(dk("status", "--json", "--state-dir", dep.state_dir).stdout)
    assert st["certificate"]["warning"] == "expires in 10 days" and st["certificate"]["renewal"] is False


def test_replaced_files_are_picked_up_by_reload(manual_dep, ca, tmp_path):
    dep, old, base = manual_dep
    cert, key = ca.issue([DOMAIN])
    ca.files(base / "operator", cert, key)
    res = dep.dk("reload")
    assert res.returncode == 0, res.stderr
    assert served(dep) == cert, res.stdout
    s = json.loads(dk("cert", "status", "--json", "--state-dir", dep.state_dir).stdout)
    assert s["warning"] is None and s["days_left"] >= 89


def _bad_cases(ca: OperatorCA, directory: Path) -> dict[str, tuple[Path, Path, str]]:
    cases = {}
    cert, key = ca.issue([DOMAIN])
    other_key = ec.generate_private_key(ec.SECP256R1())
    cases["mismatched key"] = (*ca.files(directory / "mismatch", cert, other_key), "does not match")
    cert, key = ca.issue([DOMAIN], not_before=NOW - dt.timedelta(days=100), not_after=NOW - dt.timedelta(days=1))
    cases["expired"] = (*ca.files(directory / "expired", cert, key), "expired on")
    cert, key = ca.issue(["other.example.com"])
    cases["wrong name"] = (*ca.files(directory / "name", cert, key), f"is not valid for {DOMAIN}")
    cert, key = ca.issue([DOMAIN])
    cases["incomplete chain"] = (*ca.files(directory / "chain", cert, key, with_ca=False), "incomplete chain")
    cert, key = ca.issue([DOMAIN])
    encrypted = key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"passphrase"))
    cases["passphrase key"] = (*ca.files(directory / "pass", cert, key, key_pem=encrypted), "passphrase")
    return cases


CASES = ["mismatched key", "expired", "wrong name", "incomplete chain", "passphrase key"]


@pytest.mark.parametrize("case", CASES)
def test_bad_manual_certificate_exits_2_and_creates_nothing(ca, tmp_path, case):
    chain, key, said = _bad_cases(ca, tmp_path / "operator")[case]
    state = tmp_path / "state"
    res = dk("provision", "--target", "local", "--state-dir", state, "--domain", DOMAIN, "--password-stdin",
             "--tls", "manual", "--cert", chain, "--key", key, input="x" * 16 + "\n")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert said in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not state.exists()


@pytest.mark.parametrize("case", CASES)
def test_bad_manual_certificate_leaves_an_existing_deployment_unchanged(manual_dep, ca, tmp_path, case):
    dep, _, _ = manual_dep
    chain, key, said = _bad_cases(ca, tmp_path / "operator")[case]
    before = tree_snapshot(dep.state_dir / "tls") | tree_snapshot(dep.state_dir / "nginx")
    spec = (dep.state_dir / "deploykit.toml").read_bytes()
    serving = served(dep)
    res = dep.dk("provision", "--cert", chain, "--key", key)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert said in res.stderr
    assert (dep.state_dir / "deploykit.toml").read_bytes() == spec
    assert tree_snapshot(dep.state_dir / "tls") | tree_snapshot(dep.state_dir / "nginx") == before
    assert served(dep) == serving
