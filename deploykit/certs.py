"""Certificates: make a self-signed one, and read what a PEM says (subject, SANs, expiry).

Uses `cryptography`; no files are touched here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclasses.dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    sans: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    serial: int
    self_signed: bool

    def days_left(self, now: dt.datetime | None = None) -> int:
        now = now or dt.datetime.now(dt.timezone.utc)
        return (self.not_after - now).days

    def covers(self, name: str) -> bool:
        for san in self.sans:
            if san == name or (san.startswith("*.") and name.partition(".")[2] == san[2:]):
                return True
        return False

    def as_dict(self, now: dt.datetime | None = None) -> dict:
        return {
            "subject": self.subject, "issuer": self.issuer, "sans": list(self.sans),
            "not_before": self.not_before.isoformat(), "not_after": self.not_after.isoformat(),
            "days_left": self.days_left(now), "serial": format(self.serial, "x"),
            "self_signed": self.self_signed,
        }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def make_self_signed(domain: str, days: int = 365, now: dt.datetime | None = None,
                     not_after: dt.datetime | None = None) -> tuple[bytes, bytes]:
    """A P-256 certificate for domain (subjectAltName set), and its key, both PEM."""
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain[:64])])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(domain))
    except ValueError:
        san = x509.DNSName(domain)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # RFC 5280 key identifiers: strict verifiers (Python 3.13's default VERIFY_X509_STRICT,
        # cryptography's, sslyze's) refuse a certificate without an Authority Key Identifier.
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def load_chain(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def read_cert_info(pem: bytes) -> CertInfo:
    """What the first certificate of a PEM chain says."""
    cert = load_chain(pem)[0]
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple([*ext.get_values_for_type(x509.DNSName),
                      *(str(ip) for ip in ext.get_values_for_type(x509.IPAddress))])
    except x509.ExtensionNotFound:
        sans = ()
    return CertInfo(
        subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(), sans=sans,
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        serial=cert.serial_number, self_signed=cert.subject == cert.issuer,
    )


def key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    cert = load_chain(cert_pem)[0]
    key = serialization.load_pem_private_key(key_pem, password=None)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


# -- chains and what nginx serves (added for manual certificates and certificate health) ----------

def chain_problem(chain: list[x509.Certificate], trusted: list[x509.Certificate]) -> str | None:
    """Why chain (leaf first) would not verify in a client, or None.

    Each certificate must be signed by the next one; the last must be self-signed (a root given
    in the file) or signed by one of the trusted CAs (the system's bundle).
    """
    for i, (child, parent) in enumerate(zip(chain, chain[1:])):
        if not _issued_by(child, parent):
            return (f"certificate {i + 1} ({child.subject.rfc4514_string()}) is not signed by certificate "
                    f"{i + 2} ({parent.subject.rfc4514_string()}); order the file leaf first, then each issuer")
    last = chain[-1]
    if last.issuer == last.subject and _issued_by(last, last):
        return None
    if any(ca.subject == last.issuer and _issued_by(last, ca) for ca in trusted):
        return None
    return (f"incomplete chain: the issuer of {last.subject.rfc4514_string()} ({last.issuer.rfc4514_string()}) "
            "is neither in the file nor a CA this system trusts; append the intermediate certificate(s)")


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def read_trusted_cas() -> list[x509.Certificate]:
    """The system's trusted CAs (what clients on this machine would accept), or [] if unreadable."""
    import ssl
    import warnings

    paths = ssl.get_default_verify_paths()
    for cafile in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if not cafile:
            continue
        try:
            with open(cafile, "rb") as f, warnings.catch_warnings():
                # A few old roots in distribution bundles have a negative serial; they still count.
                warnings.simplefilter("ignore")
                return x509.load_pem_x509_certificates(f.read())
        except (OSError, ValueError):
            continue
    return []


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def probe_served_cert(domain: str, port: int, timeout: float = 5.0) -> x509.Certificate | None:
    """The certificate nginx presents on loopback for domain (SNI), unverified; None if no answer.

    Unverified on purpose: this asks which certificate is served, not whether to trust it.
    """
    import socket
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            with ctx.wrap_socket(sock, server_hostname=domain) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return x509.load_der_x509_certificate(der) if der else None
