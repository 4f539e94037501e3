"""The reference output in conf/: what deploykit writes for jupyter.example.com, for operators to read.

    python -m deploykit.reference          # regenerate conf/nginx and conf/supervisor
    python -m deploykit.reference --check  # exit 1 if they drifted from the templates

Rendering is pure, so this runs without nginx, supervisord or a certificate: the example
materials below stand in for the secrets and certificate paths of a real deployment.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploykit.desired import build_desired_state
from deploykit.host import Host
from deploykit.labassets import StaticDir
from deploykit.materials import Materials
from deploykit.paths import system_paths
from deploykit.spec import build_spec

DOMAIN = "jupyter.example.com"
EXAMPLE_HASH = "argon2:$argon2id$v=19$m=10240,t=10,p=8$EXAMPLE-SALT$EXAMPLE-HASH-NOT-A-REAL-PASSWORD"
HOST = Host(python="/opt/deploykit/venv/bin/python3", euid=0, user="root", home="/root", ipv6=True,
            nginx="/usr/sbin/nginx", systemd=True)
# What labassets.probe_static_dirs finds in that environment: nginx serves these bundles itself.
STATIC_DIRS = (StaticDir("lab", "/opt/deploykit/venv/share/jupyter/lab/static"),
               StaticDir("notebook", "/opt/deploykit/venv/lib/python3.11/site-packages/notebook/static"))


def example_spec():
    return build_spec({
        "deployment": {"domain": DOMAIN, "target": "system", "mode": "notebook"},
        "tls": {"mode": "letsencrypt", "email": "admin@example.com"},
        "internal": {"jupyter_port": 8888, "hub_port": 8081, "proxy_port": 8000, "proxy_api_port": 8001},
    })


def render_reference() -> dict[str, bytes]:
    """conf/ relative path -> content, for every nginx and supervisor file of the example."""
    spec = example_spec()
    paths = system_paths(Path("/"))
    live = Path("/etc/letsencrypt/live") / DOMAIN
    materials = Materials(
        secrets={paths.secret("notebook-password.hash"): (EXAMPLE_HASH + "\n").encode(),
                 paths.secret("jupyter-cookie-secret"): b"EXAMPLE\n"},
        cert_path=live / "fullchain.pem", key_path=live / "privkey.pem")
    from deploykit.system import ServiceAccount

    account = ServiceAccount("jupyter", Path("/home/jupyter"), "jupyter", None)
    desired = build_desired_state(spec, paths, HOST, materials, STATIC_DIRS, account=account)
    out = {}
    for f in desired.files:
        if f.path.is_relative_to(paths.etc_nginx):
            out[str(Path("nginx") / f.path.relative_to(paths.etc_nginx))] = f.content
        elif f.path.is_relative_to(paths.supervisor_programs):
            out[str(Path("supervisor") / f.path.relative_to(paths.supervisor_programs))] = f.content
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploykit.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on drift")
    parser.add_argument("--conf-dir", type=Path, default=Path(__file__).resolve().parent.parent / "conf")
    args = parser.parse_args(argv)
    wanted = render_reference()
    existing = {str(p.relative_to(args.conf_dir)): p.read_bytes()
                for sub in ("nginx", "supervisor") for p in (args.conf_dir / sub).rglob("*") if p.is_file()}
    drift = sorted(k for k in wanted.keys() | existing.keys() if wanted.get(k) != existing.get(k))
    if args.check:
        for name in drift:
            print(f"drifted: conf/{name}")
        if drift:
            print("regenerate with: python -m deploykit.reference")
        return 1 if drift else 0
    for name in existing.keys() - wanted.keys():
        (args.conf_dir / name).unlink()
    for name, content in wanted.items():
        target = args.conf_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    print(f"wrote {len(wanted)} files under {args.conf_dir}" + (f" ({len(drift)} changed)" if drift else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
