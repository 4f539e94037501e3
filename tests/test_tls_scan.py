"""Issue 8, test 3: the deployed nginx passes sslyze's check against Mozilla's "intermediate" profile,
and deploykit's TLS settings (deploykit/tlsprofile.py) are the guideline's (../shared 6.0.json).

sslyze runs from its own venv (.venv-sslyze, made by `scripts/install-deps --test`): it pins a
cryptography that conflicts with certbot's. It scans loopback only (the test's free port, with
the test domain as SNI) and trusts the deployment's self-signed certificate explicitly
(--certinfo_ca_file); without that, "certificate_path_validation" fails, which says only that
a self-signed certificate is in no public trust store.

What the scan cannot show, and why it is not configured:
 - OCSP stapling (the guideline's ocsp_staple): a self-signed certificate names no OCSP
   responder, so there is nothing to staple; sslyze does not require it either.
 - X25519MLKEM768, the guideline's first key-exchange group: Debian 12's OpenSSL 3.0 does not
   have it (nginx -t refuses the name), so the curve list starts at X25519 (tlsprofile.py).
   Offering fewer groups than listed is compliant; offering others would not be.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from support import ROOT, SHARED, clean_env

from deploykit.render import render_template
from deploykit.tlsprofile import GUIDELINE_VERSION, INTERMEDIATE, UNSUPPORTED_CURVES

SSLYZE = ROOT / ".venv-sslyze" / "bin" / "python"
GUIDELINE = SHARED / "data" / "mozilla-tls" / f"{GUIDELINE_VERSION}.json"


def guideline() -> dict:
    return json.loads(GUIDELINE.read_text())


def run_sslyze(dep, *args: str) -> subprocess.CompletedProcess:
    if not SSLYZE.exists():
        pytest.fail(f"{SSLYZE} is missing: run ./scripts/install-deps --test")
    return subprocess.run([str(SSLYZE), "-m", "sslyze", "--sni", dep.domain, "--certinfo_ca_file", str(dep.cert),
                           *args, f"127.0.0.1:{dep.https_port}"], capture_output=True, text=True, timeout=300,
                          env=clean_env())


def assert_compliant(res: subprocess.CompletedProcess, port: int) -> None:
    # sslyze exits 0 when it could not connect at all: the verdict line is what counts.
    assert f"127.0.0.1:{port}: OK - Compliant." in res.stdout, res.stdout[-3000:] + res.stderr[-2000:]
    assert res.returncode == 0


# -- deploykit's profile is the guideline's --------------------------------------------------

def test_profile_is_mozilla_intermediate():
    g = guideline()
    assert g["version"] == float(GUIDELINE_VERSION)
    inter = g["configurations"]["intermediate"]
    assert INTERMEDIATE["protocols"].split() == inter["tls_versions"]
    assert INTERMEDIATE["ciphers"].split(":") == inter["ciphers"]["openssl"]
    assert INTERMEDIATE["curves"].split(":") == [c for c in inter["tls_curves"] if c not in UNSUPPORTED_CURVES]
    assert set(UNSUPPORTED_CURVES) <= set(inter["tls_curves"]), "only curves the guideline lists may be left out"
    assert INTERMEDIATE["prefer_server_ciphers"] == ("on" if inter["server_preferred_order"] else "off")
    assert INTERMEDIATE["hsts_max_age"] >= inter["hsts_min_age"]
    # No DHE suites, so no ssl_dhparam is needed for the guideline's dh_param_size.
    assert not any(c.startswith("DHE-") for c in inter["ciphers"]["openssl"])


def test_ssl_snippet_carries_the_profile():
    text = render_template("nginx/ssl.conf.j2", tls=INTERMEDIATE)
    directives = dict(line.rstrip(";").split(" ", 1) for line in text.splitlines()
                      if line and not line.startswith("#"))
    assert directives["ssl_protocols"] == INTERMEDIATE["protocols"]
    assert directives["ssl_ciphers"] == INTERMEDIATE["ciphers"]
    assert directives["ssl_ecdh_curve"] == INTERMEDIATE["curves"]
    assert directives["ssl_prefer_server_ciphers"] == INTERMEDIATE["prefer_server_ciphers"]
    assert directives["ssl_session_tickets"] == "off"


# -- the deployed nginx, scanned ---------------------------------------------------------------

@pytest.mark.real
def test_deployed_snippet_and_certificate_fit_the_guideline(notebook):
    deployed = (notebook.state_dir / "nginx" / "snippets" / "ssl.conf").read_text()
    assert deployed == render_template("nginx/ssl.conf.j2", tls=INTERMEDIATE)
    inter = guideline()["configurations"]["intermediate"]
    cert = x509.load_pem_x509_certificate(notebook.cert.read_bytes())
    lifespan = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifespan <= dt.timedelta(days=inter["maximum_certificate_lifespan"])
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1" and "prime256v1" in inter["certificate_curves"]
    assert cert.signature_algorithm_oid._name in inter["certificate_signatures"]
    hsts = notebook.session().get(notebook.url("api")).headers["strict-transport-security"]
    assert int(hsts.split("max-age=")[1].split(";")[0]) >= inter["hsts_min_age"]


@pytest.mark.real
def test_sslyze_finds_nginx_compliant_with_mozilla_intermediate(notebook):
    """sslyze's own copy of the profile (it bundles the guideline 5.7 JSON)."""
    res = run_sslyze(notebook, "--mozilla_config=intermediate")
    assert_compliant(res, notebook.https_port)
    assert "Supported curves:                  X25519, secp256r1, secp384r1" in res.stdout


@pytest.mark.real
def test_sslyze_finds_nginx_compliant_with_guideline_6(notebook, tmp_path):
    """The same check against the guideline deploykit follows (6.0), given to sslyze as a custom profile."""
    inter = dict(guideline()["configurations"]["intermediate"])
    # sslyze's profile format also lists the cipher names for Caddy and Go; only the IANA names are compared.
    inter["ciphers"] = {**inter["ciphers"], "caddy": inter["ciphers"]["iana"], "go": inter["ciphers"]["iana"]}
    profile = tmp_path / "intermediate-6.0.json"
    profile.write_text(json.dumps(inter))
    res = run_sslyze(notebook, f"--custom_tls_config={profile}")
    assert_compliant(res, notebook.https_port)
