"""A real Chromium (Debian's package) driven by Playwright, for the browser tests.

Playwright's own browser download cannot work here, so Debian's /usr/bin/chromium is launched
by path: headless, no sandbox (root), background networking off (this machine has no outside
network), the test domain mapped to 127.0.0.1, and exactly the deployment's certificate trusted
by its public-key pin (not a blanket "ignore certificate errors").
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from support import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("DEPLOYKIT_TEST_ARTIFACTS", ROOT / "test-artifacts"))


def chromium_missing_reason() -> str | None:
    if not os.path.exists(CHROMIUM):
        return "Debian's chromium package is not installed (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright (PyPI) is not installed"
    return None


def spki_pin(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@contextlib.contextmanager
def browser_page(domain: str, cert: Path, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    args = [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage",
        f"--host-resolver-rules=MAP {domain} 127.0.0.1",
        f"--ignore-certificate-errors-spki-list={spki_pin(cert.read_bytes())}",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=args,
            viewport={"width": 1280, "height": 800}, accept_downloads=False)
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


class Shots:
    """Numbered screenshots of each step, kept as test artifacts."""

    def __init__(self, name: str):
        self.dir = ARTIFACTS / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def take(self, page, step: str) -> Path:
        self.n += 1
        path = self.dir / f"{self.n:02d}-{step}.png"
        page.screenshot(path=str(path))
        return path
