"""conf/ holds what deploykit writes for jupyter.example.com; it must not drift from the templates."""

from __future__ import annotations

import subprocess
import sys

from deploykit.reference import render_reference
from support import ROOT


def test_reference_conf_matches_templates():
    res = subprocess.run([sys.executable, "-m", "deploykit.reference", "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + "\nregenerate with: python -m deploykit.reference"


def test_reference_covers_nginx_and_supervisor():
    names = set(render_reference())
    assert any(n.startswith("nginx/sites-available/") for n in names)
    assert any(n.startswith("supervisor/") for n in names)
    assert (ROOT / "conf" / "nginx").is_dir() and (ROOT / "conf" / "supervisor").is_dir()


def test_rendered_nginx_site_has_the_required_directives():
    site = render_reference()["nginx/sites-available/deploykit.conf"].decode()
    for needle in ["listen 443 ssl http2 default_server;", "server_tokens off;", "ssl_certificate ",
                   "location ^~ /.well-known/acme-challenge/", "return 301 https://$host$request_uri;",
                   'add_header Strict-Transport-Security "max-age=63072000" always;',
                   "add_header X-Content-Type-Options nosniff always;", "add_header Referrer-Policy",
                   "map $http_upgrade $deploykit_connection_upgrade", "client_max_body_size 1g;",
                   "proxy_pass http://deploykit_backend;"]:
        assert needle in site, needle
    proxy = render_reference()["nginx/snippets/deploykit/proxy.conf"].decode()
    for needle in ["proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                   "proxy_set_header Connection $deploykit_connection_upgrade;", "proxy_set_header Host $http_host;",
                   "proxy_set_header X-Real-IP", "proxy_set_header X-Forwarded-For", "X-Forwarded-Proto $scheme",
                   "proxy_set_header X-Scheme $scheme;", "proxy_buffering off;"]:
        assert needle in proxy, needle
    main = render_reference()["nginx/modules-enabled/90-deploykit-main.conf"].decode()
    assert "worker_shutdown_timeout" in main


def test_rendered_supervisor_program_is_complete():
    conf = render_reference()["supervisor/deploykit-jupyter.conf"].decode()
    command = next(l for l in conf.splitlines() if l.startswith("command="))
    assert command.split("=", 1)[1].startswith("/")
    for needle in ["autorestart=true", "startsecs=", "stopasgroup=true", "killasgroup=true", "stopsignal=TERM",
                   "redirect_stderr=true", "stdout_logfile_maxbytes=", "stdout_logfile_backups=",
                   'HOME="', 'USER="', 'PATH="']:
        assert needle in conf, needle
