"""Secrets and certificates a deployment needs: read what exists, make what is missing.

Nothing is written here: made material becomes part of the desired state and is written by
apply, under a checkpoint, like every other file. Existing material is kept, so runs are
idempotent and sessions survive a reload.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from deploykit import certs, passwords
from deploykit.errors import OperationFailed
from deploykit.paths import Paths
from deploykit.spec import Spec

RENEW_SELF_SIGNED_DAYS = 30


@dataclasses.dataclass(frozen=True)
class Materials:
    secrets: dict[Path, bytes]      # files written 0600
    cert_path: Path | None          # what nginx serves (None when TLS is off)
    key_path: Path | None
    public: dict[Path, bytes] = dataclasses.field(default_factory=dict)  # e.g. a certificate, 0644
    made: tuple[str, ...] = ()      # what was generated this run, for the progress output


def read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def password_hash_path(paths: Paths) -> Path:
    return paths.secret("notebook-password.hash")


def self_signed_paths(paths: Paths) -> tuple[Path, Path]:
    # Outside certbot's live/ directory: a bootstrap certificate never shadows an issued one.
    d = paths.tls_dir / "self-signed"
    return d / "cert.pem", d / "key.pem"


def _usable_self_signed(cert_pem: bytes | None, key_pem: bytes | None, domain: str) -> bool:
    if not cert_pem or not key_pem:
        return False
    try:
        info = certs.read_cert_info(cert_pem)
        return (info.covers(domain) and info.days_left() > RENEW_SELF_SIGNED_DAYS
                and certs.key_matches(cert_pem, key_pem))
    except Exception:
        return False


def read_or_make_self_signed(paths: Paths, domain: str) -> tuple[Path, Path, dict[Path, bytes], dict[Path, bytes], list[str]]:
    cert_path, key_path = self_signed_paths(paths)
    cert_pem, key_pem = read_bytes(cert_path), read_bytes(key_path)
    made = []
    if not _usable_self_signed(cert_pem, key_pem, domain):
        cert_pem, key_pem = certs.make_self_signed(domain)
        made.append(f"self-signed certificate for {domain}")
    return cert_path, key_path, {key_path: key_pem}, {cert_path: cert_pem}, made


def read_or_make_materials(spec: Spec, paths: Paths, password_hash: str | None = None) -> Materials:
    secrets: dict[Path, bytes] = {}
    public: dict[Path, bytes] = {}
    made: list[str] = []

    if spec.deployment.mode == "notebook":
        hash_path = password_hash_path(paths)
        if password_hash is None:
            existing = read_bytes(hash_path)
            if existing is None:
                raise OperationFailed(f"no password hash at {hash_path}: run `deploykit provision` "
                                      "(with --password-stdin or --password-file) to set one")
            password_hash = existing.decode().strip()
        secrets[hash_path] = (password_hash + "\n").encode()
        cookie = paths.secret("jupyter-cookie-secret")
        secrets[cookie] = read_bytes(cookie) or (passwords.generate_secret_hex() + "\n").encode()
    else:
        from deploykit.hub import read_or_make_hub_secrets

        secrets.update(read_or_make_hub_secrets(spec, paths))

    cert_path = key_path = None
    mode = spec.tls.mode
    if mode in {"self-signed", "letsencrypt"}:
        # letsencrypt starts from (and falls back to) a bootstrap self-signed certificate;
        # the ACME flow switches nginx to the issued one once it exists.
        cert_path, key_path, s, p, m = read_or_make_self_signed(paths, spec.deployment.domain)
        secrets.update(s)
        public.update(p)
        made += m
        if mode == "letsencrypt":
            from deploykit.acme import issued_paths

            issued = issued_paths(paths, spec.deployment.domain)
            if issued is not None:
                cert_path, key_path = issued
    elif mode == "manual":
        from deploykit.manualcert import read_manual_cert

        cert_path, key_path, s, p = read_manual_cert(spec, paths)
        secrets.update(s)
        public.update(p)
    return Materials(secrets=secrets, cert_path=cert_path, key_path=key_path, public=public, made=tuple(made))
