"""Mozilla's "intermediate" server-side TLS profile (guidelines 6.0), as nginx 1.22 on OpenSSL 3 takes it.

Kept as data here so an installed deploykit needs nothing else; tests compare it with the
guideline JSON in ../shared/data/mozilla-tls/. One deliberate difference: the guideline's
first curve, X25519MLKEM768, needs OpenSSL 3.5; Debian 12's OpenSSL 3.0 rejects the name and
`nginx -t` fails, so the list starts at X25519.
"""

GUIDELINE_VERSION = "6.0"
NGINX_VERSION = "1.22"

INTERMEDIATE = {
    "version": GUIDELINE_VERSION,
    "nginx_version": NGINX_VERSION,
    "protocols": "TLSv1.2 TLSv1.3",
    "ciphers": ":".join([
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]),
    "curves": "X25519:prime256v1:secp384r1",
    "prefer_server_ciphers": "off",
    "hsts_max_age": 63072000,
}
UNSUPPORTED_CURVES = ("X25519MLKEM768",)
