"""Certificate health for `deploykit cert status`: what nginx is configured with, whether it is
the one served, how long it has left, and whether (and how) it is renewed."""

from __future__ import annotations

from pathlib import Path

from deploykit import acme, certs
from deploykit.paths import Paths
from deploykit.spec import Spec
from deploykit.status import read_certificate_status

DETAIL = {
    "self-signed": "self-signed: `deploykit provision` or `deploykit reload` makes a new one when fewer than "
                   "30 days are left; nothing runs them on a schedule",
    "manual": "manual: nothing renews it; replace the files named by tls.cert and tls.key, then run "
              "`deploykit reload`",
    "off": "TLS is off",
}


def renewal_detail(spec: Spec, paths: Paths) -> tuple[str | None, str]:
    """What renews the certificate (a timer, a cron entry, or nothing), and what to do about it."""
    if spec.tls.mode != "letsencrypt":
        return None, DETAIL[spec.tls.mode]
    domain = spec.deployment.domain
    schedule = acme.read_renewal_schedule(spec, paths) if paths.target == "system" else None
    if acme.issued_paths(paths, domain) is None:
        return schedule, ("no certificate issued yet (nginx serves the bootstrap self-signed one): fix what "
                          "`deploykit provision` reported, then run `deploykit cert renew`")
    if not acme.read_renewal_hook(paths, domain):
        return schedule, (f"{acme.renewal_conf_path(paths, domain)} does not run deploykit's deploy hook: "
                          "run `deploykit cert renew --force`")
    if paths.target == "local":
        return None, ("`deploykit cert renew` renews it when due and the deploy hook reloads nginx; the local "
                      "target schedules nothing: run it from your own scheduler")
    if schedule is None:
        return None, "no timer or cron entry runs `deploykit cert renew`: run `deploykit provision` again"
    return schedule, f"the {schedule} runs `deploykit cert renew` twice a day; the deploy hook reloads nginx"


def build_cert_status(spec: Spec, paths: Paths) -> dict:
    out: dict = {"domain": spec.deployment.domain, "mode": spec.tls.mode}
    cert = read_certificate_status(spec, paths)
    if cert is None:
        out.update(path=None, renewal=None, renewal_schedule=None, renewal_detail=DETAIL["off"], served=None,
                   ok=True)
        return out
    out.update(cert)
    if spec.tls.mode == "letsencrypt":
        out["issued"] = acme.issued_paths(paths, spec.deployment.domain) is not None
    out["renewal_schedule"], out["renewal_detail"] = renewal_detail(spec, paths)
    served = certs.probe_served_cert(spec.deployment.domain, spec.http.https_port)
    out["served"] = None
    if served is not None and "error" not in cert:
        try:
            leaf = certs.load_chain(Path(cert["path"]).read_bytes())[0]
            out["served"] = certs.fingerprint(leaf) == certs.fingerprint(served)
        except (OSError, ValueError):
            pass
    out["ok"] = "error" not in cert and cert["days_left"] >= 0
    return out


def render_cert_status(s: dict) -> str:
    if s.get("path") is None:
        return f"certificate: none ({s['renewal_detail']})"
    if "error" in s:
        return f"certificate: unreadable {s['path']}: {s['error']}"
    served = {True: "yes", False: "no: nginx serves another certificate (run `deploykit reload`)",
              None: "unknown (nginx does not answer)"}[s["served"]]
    renewal = {True: "configured", False: "NOT configured", None: "n/a"}[s["renewal"]]
    lines = [
        f"certificate: {s['path']} ({s['mode']}{'' if s.get('issued', True) else ', not issued yet'})",
        f"subject:     {s['subject']}",
        f"names:       {', '.join(s['sans']) or '(none)'}",
        f"issuer:      {s['issuer']}",
        f"not after:   {s['not_after']} ({s['days_left']} days left)",
        f"serial:      {s['serial']}",
        f"served:      {served}",
        f"renewal:     {renewal}: {s['renewal_detail']}",
    ]
    return "\n".join(lines)
