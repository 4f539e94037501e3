"""Bring-your-own certificate (tls.mode = "manual"): check the operator's files, then install copies.

Every check runs before anything is written (provision calls check_manual_cert before it creates
the state dir), so a wrong key, an incomplete chain, a wrong name or an expired certificate
exits 2 and changes nothing. The copies under <tls dir>/manual/ are what nginx reads: the
operator's originals may live anywhere (and be replaced later; `deploykit reload` picks them up).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from deploykit import certs
from deploykit.errors import BadInput
from deploykit.paths import Paths
from deploykit.spec import Spec


def installed_paths(paths: Paths) -> tuple[Path, Path]:
    d = paths.tls_dir / "manual"
    return d / "fullchain.pem", d / "privkey.pem"


def _read(path: str, where: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BadInput(where, path, f"cannot read it ({exc.strerror or exc})") from None


def check_manual_cert(spec: Spec, now: dt.datetime | None = None) -> tuple[bytes, bytes]:
    """The operator's chain (normalised PEM, leaf first) and key, once every check has passed."""
    tls, domain = spec.tls, spec.deployment.domain
    cert_pem, key_pem = _read(tls.cert, "--cert"), _read(tls.key, "--key")
    try:
        chain = certs.load_chain(cert_pem)
    except ValueError:
        chain = []
    if not chain:
        raise BadInput("--cert", tls.cert, "no PEM certificate in it; expected the certificate chain, leaf first")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise BadInput("--key", tls.key, "the key is protected by a passphrase; nginx would ask for it at every "
                                         "start: give it without one (openssl pkey -in KEY -out KEY.plain)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise BadInput("--key", tls.key, "not a PEM private key") from None
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if chain[0].public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        raise BadInput("--key", tls.key, f"does not match the certificate in {tls.cert} (a key from another "
                                         "certificate?)")
    problem = certs.chain_problem(chain, certs.read_trusted_cas())
    if problem:
        raise BadInput("--cert", tls.cert, problem)
    info = certs.read_cert_info(cert_pem)
    if not info.covers(domain):
        names = ", ".join(info.sans) or f"no subjectAltName (subject {info.subject})"
        raise BadInput("--cert", tls.cert, f"is not valid for {domain}: it names {names}")
    now = now or dt.datetime.now(dt.timezone.utc)
    if info.not_after <= now:
        raise BadInput("--cert", tls.cert, f"expired on {info.not_after:%Y-%m-%d %H:%M} UTC; get a new one")
    if info.not_before > now:
        raise BadInput("--cert", tls.cert, f"not valid before {info.not_before:%Y-%m-%d %H:%M} UTC "
                                           "(is this machine's clock right?)")
    normalised = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    return normalised, key_pem


def read_manual_cert(spec: Spec, paths: Paths) -> tuple[Path, Path, dict[Path, bytes], dict[Path, bytes]]:
    """Checked copies of the operator's files: (cert path, key path, secrets {key}, public {chain})."""
    chain_pem, key_pem = check_manual_cert(spec)
    cert_path, key_path = installed_paths(paths)
    return cert_path, key_path, {key_path: key_pem}, {cert_path: chain_pem}
