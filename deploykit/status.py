"""`deploykit status`: programs, nginx, the certificate, the URL, and one HTTPS request through nginx."""

from __future__ import annotations

import json
from pathlib import Path

import click

from deploykit import certs
from deploykit.desired import public_url
from deploykit.materials import self_signed_paths
from deploykit.nginx import Nginx
from deploykit.paths import Paths
from deploykit.spec import Spec
from deploykit.supervisor import Supervisor
from deploykit.verify import probe_jupyter_api

WARN_DAYS = 14


def served_cert_path(spec: Spec, paths: Paths) -> Path | None:
    """The certificate nginx is configured with, without making or fetching anything."""
    if spec.tls.mode == "off":
        return None
    if spec.tls.mode == "letsencrypt":
        from deploykit.acme import issued_paths

        issued = issued_paths(paths, spec.deployment.domain)
        if issued:
            return issued[0]
    if spec.tls.mode == "manual":
        from deploykit.manualcert import installed_paths

        return installed_paths(paths)[0]
    return self_signed_paths(paths)[0]


def read_certificate_status(spec: Spec, paths: Paths) -> dict | None:
    path = served_cert_path(spec, paths)
    if path is None:
        return None
    try:
        info = certs.read_cert_info(path.read_bytes())
    except (OSError, ValueError) as exc:
        return {"path": str(path), "error": str(exc)}
    out = {"path": str(path), **info.as_dict()}
    out["warning"] = (f"expires in {out['days_left']} days" if out["days_left"] < WARN_DAYS else None)
    try:
        from deploykit.acme import renewal_configured

        out["renewal"] = renewal_configured(spec, paths)
    except ImportError:
        out["renewal"] = None
    return out


def build_status(spec: Spec, paths: Paths, host) -> dict:
    sup = Supervisor(paths, host.python)
    nginx = Nginx(paths, host.nginx)
    programs = []
    if sup.probe_running():
        from deploykit.record import read_record

        ours = set(read_record(paths.record).get("programs", []))
        programs = [{"name": n, "state": i["state"], "pid": i["pid"] or None}
                    for n, i in sorted(sup.probe_programs().items()) if not ours or n in ours]
    pid = nginx.probe_pid()
    config_ok, said = nginx.probe_config() if paths.nginx_main_conf.exists() else (False, "no config")
    cert = read_certificate_status(spec, paths)
    tls = spec.tls.mode != "off"
    port = spec.http.https_port if tls else spec.http.http_port
    path = spec.http.base_url + ("hub/api/" if spec.deployment.mode == "hub" else "api")
    probe = probe_jupyter_api(spec.deployment.domain, port, path, tls, Path(cert["path"]) if cert else None)
    healthy = (bool(programs) and all(p["state"] == "RUNNING" for p in programs) and pid is not None
               and config_ok and probe.ok and not (cert and (cert.get("error") or cert["days_left"] < 0)))
    status = {
        "programs": programs,
        "nginx": {"running": pid is not None, "pid": pid, "config_valid": config_ok,
                  "config_message": "" if config_ok else said},
        "certificate": cert,
        "url": public_url(spec),
        "https": {"ok": probe.ok, "detail": probe.detail},
        "healthy": healthy,
    }
    if spec.deployment.mode == "hub":
        from deploykit.hub import describe_environment

        status["user_environment"] = describe_environment(spec, paths, host)
    return status


def render_status(status: dict) -> str:
    lines = [f"url:         {status['url']}"]
    for p in status["programs"] or [{"name": "(supervisord not running)", "state": "", "pid": None}]:
        lines.append(f"program:     {p['name']:<24} {p['state']:<9} pid {p['pid'] or '-'}")
    n = status["nginx"]
    lines.append(f"nginx:       {'running pid ' + str(n['pid']) if n['running'] else 'not running'}, "
                 f"config {'valid' if n['config_valid'] else 'INVALID: ' + n['config_message']}")
    c = status["certificate"]
    if c is None:
        lines.append("certificate: none (TLS off)")
    elif "error" in c:
        lines.append(f"certificate: unreadable {c['path']}: {c['error']}")
    else:
        lines.append(f"certificate: {c['subject']} issued by {c['issuer']}")
        lines.append(f"             not after {c['not_after']} ({c['days_left']} days left)")
        if c.get("warning"):
            lines.append(f"WARNING:     certificate {c['warning']}: run `deploykit cert renew`")
    if "user_environment" in status:
        lines.append(f"user env:    {status['user_environment']}")
    lines.append(f"https:       {'ok' if status['https']['ok'] else 'FAILED'} ({status['https']['detail']})")
    lines.append(f"healthy:     {'yes' if status['healthy'] else 'no'}")
    return "\n".join(lines)


def run_status(state_dir: Path, root: Path, as_json: bool) -> int:
    from deploykit.provision import load_deployment

    spec, paths, host = load_deployment(state_dir, root)
    status = build_status(spec, paths, host)
    if as_json:
        click.echo(json.dumps(status, indent=1))
    else:
        click.echo(render_status(status))
        if status["certificate"] and status["certificate"].get("warning"):
            click.echo(f"warning: certificate {status['certificate']['warning']}", err=True)
    return 0 if status["healthy"] else 1
