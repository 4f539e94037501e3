"""`deploykit doctor`: what commonly breaks Jupyter behind a proxy, checked on one deployment and its host.

Every check only looks (files, /proc, the daemons' own interfaces, requests over loopback) and
returns Checks: ok, a finding (with how to fix it), a note (worth knowing, not wrong) or skipped
(cannot be checked here, and why). Findings make `deploykit doctor` exit 1.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import datetime as dt
import ipaddress
import json
import os
import pwd
import shutil
import socket
import stat
import time
from pathlib import Path

import click

from deploykit.errors import DeploykitError

OK, FINDING, NOTE, SKIPPED = "ok", "finding", "note", "skipped"
DISK_MIN_FREE = 1 << 30            # bytes: below this Jupyter's autosave and the logs soon fail
DISK_MIN_FRACTION = 0.05
CLOCK_FUTURE_SLACK = 300           # seconds a file's mtime may be ahead of the clock


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Context:
    """What the checks share, gathered once: the spec, its desired state, and the daemons' state."""

    spec: object
    paths: object
    host: object
    desired: object = None
    desired_error: str = ""
    supervisor_running: bool = False
    programs: dict = dataclasses.field(default_factory=dict)
    nginx_pid: int | None = None
    https_timed_out: bool = False     # later probes would only wait as long again

    @property
    def tls(self) -> bool:
        return self.spec.tls.mode != "off"

    @property
    def public_port(self) -> int:
        return self.spec.http.https_port if self.tls else self.spec.http.http_port

    @property
    def origin(self) -> str:
        scheme, default = ("https", 443) if self.tls else ("http", 80)
        domain = self.spec.deployment.domain
        host = f"[{domain}]" if ":" in domain else domain
        return f"{scheme}://{host}" + ("" if self.public_port == default else f":{self.public_port}")


def probe_context(spec, paths, host) -> Context:
    from deploykit.nginx import Nginx
    from deploykit.provision import build_desired
    from deploykit.supervisor import Supervisor

    ctx = Context(spec, paths, host)
    try:
        ctx.desired, _ = build_desired(spec, paths, host)
    except (DeploykitError, OSError) as exc:
        ctx.desired_error = str(exc)
    sup = Supervisor(paths, host.python)
    ctx.supervisor_running = sup.probe_running()
    ctx.programs = sup.probe_programs() if ctx.supervisor_running else {}
    ctx.nginx_pid = Nginx(paths, host.nginx).probe_pid()
    return ctx


def _program_names(ctx: Context) -> list[str]:
    if ctx.desired is not None:
        return [p.name for p in ctx.desired.programs]
    from deploykit.record import read_record

    return list(read_record(ctx.paths.record).get("programs", []))


# -- daemons ------------------------------------------------------------------------------------

def check_supervisord(ctx: Context) -> list[Check]:
    if ctx.supervisor_running:
        return [Check("supervisord", OK, f"running, answering on {ctx.paths.supervisor_socket}")]
    if ctx.paths.target == "local":
        fix = "`deploykit reload` starts it and its programs"
    else:
        fix = "start the supervisor service (`service supervisor start`), then run `deploykit reload`"
    return [Check("supervisord", FINDING, f"not running (no answer on {ctx.paths.supervisor_socket})", fix)]


def check_programs(ctx: Context) -> list[Check]:
    if not ctx.supervisor_running:
        return [Check("programs", SKIPPED, "supervisord is not running (see supervisord)")]
    out = []
    for name in _program_names(ctx):
        info = ctx.programs.get(name)
        state = info["state"] if info else "missing"
        if state == "RUNNING":
            out.append(Check("programs", OK, f"{name} RUNNING ({info['description']})"))
            continue
        log = ctx.paths.log(name)
        out.append(Check("programs", FINDING, f"{name} is {state}" + (f" ({info['description']})" if info and
                                                                       info.get("description") else ""),
                         f"`deploykit reload` starts programs that should run; if {name} stops again, "
                         f"read {log}"))
    return out or [Check("programs", FINDING, "no programs recorded for this deployment",
                         "run `deploykit provision` again")]


def check_nginx(ctx: Context) -> list[Check]:
    from deploykit.nginx import Nginx

    nginx = Nginx(ctx.paths, ctx.host.nginx)
    if not ctx.paths.nginx_main_conf.exists():
        return [Check("nginx", FINDING, f"no configuration at {ctx.paths.nginx_main_conf}",
                      "run `deploykit provision` again")]
    ok, said = nginx.probe_config()
    out = []
    if not ok:
        out.append(Check("nginx", FINDING, f"`nginx -t` refuses the configuration on disk: {said}",
                         "`deploykit plan` shows what differs from the spec; `deploykit reload` writes "
                         "deploykit's configuration back"))
    if ctx.nginx_pid is None:
        fix = ("`deploykit reload` starts it" if ctx.paths.target == "local"
               else "start the nginx service (`service nginx start`)")
        out.append(Check("nginx", FINDING, f"not running (no live pid in {ctx.paths.nginx_pid})", fix))
    elif ok:
        out.append(Check("nginx", OK, f"running (pid {ctx.nginx_pid}), configuration valid"))
    return out


# -- ports --------------------------------------------------------------------------------------

def read_listeners() -> dict[int, set[int]]:
    """TCP port -> socket inodes listening on it (any address, IPv4 and IPv6)."""
    out: dict[int, set[int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A":  # LISTEN
                port = int(fields[1].rsplit(":", 1)[1], 16)
                out.setdefault(port, set()).add(int(fields[9]))
    return out


def read_socket_owners(inodes: set[int]) -> dict[int, set[int]]:
    """Socket inode -> pids holding it (only processes this user may inspect)."""
    wanted = {f"socket:[{i}]": i for i in inodes}
    owners: dict[int, set[int]] = {}
    if not wanted:
        return owners
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fds = list((pid_dir / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target in wanted:
                owners.setdefault(wanted[target], set()).add(int(pid_dir.name))
    return owners


def read_descendants(pids: set[int]) -> set[int]:
    parent: dict[int, int] = {}
    for pid_dir in Path("/proc").iterdir():
        if pid_dir.name.isdigit():
            try:
                parent[int(pid_dir.name)] = int((pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out = set(pids)
    grew = True
    while grew:
        more = {p for p, pp in parent.items() if pp in out and p not in out}
        out |= more
        grew = bool(more)
    return out


def _process_name(pid: int) -> str:
    # The name only: another process's command line may hold its own secrets.
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def check_ports(ctx: Context) -> list[Check]:
    from deploykit.ports import NEEDED

    spec = ctx.spec
    wanted = [("http.http_port", spec.http.http_port, "nginx")]
    if ctx.tls:
        wanted.append(("http.https_port", spec.http.https_port, "nginx"))
    for key in NEEDED.get(spec.deployment.mode, ()):
        port = getattr(spec.internal, key)
        if port:
            wanted.append((f"internal.{key}", port, "its supervisor programs"))
    ours = set()
    if ctx.nginx_pid:
        ours.add(ctx.nginx_pid)
    ours |= {info["pid"] for info in ctx.programs.values() if info.get("pid")}
    ours = read_descendants(ours)
    listeners = read_listeners()
    owners = read_socket_owners(set().union(*(listeners.get(p, set()) for _, p, _ in wanted)))
    out = []
    for key, port, expected in wanted:
        pids = set().union(*(owners.get(i, set()) for i in listeners.get(port, set())))
        foreign = sorted(pids - ours)
        if listeners.get(port) and not pids:
            out.append(Check("ports", FINDING, f"port {port} ({key}) is in use by a process this user cannot see",
                             f"find it with `ss -ltnp 'sport = :{port}'` and stop it, or set {key} to a free "
                             "port in deploykit.toml and run `deploykit reload`"))
        elif foreign:
            who = ", ".join(f"pid {p} ({_process_name(p)})" for p in foreign[:3])
            out.append(Check("ports", FINDING, f"port {port} ({key}) is taken by another process: {who}; "
                                               f"{expected} cannot listen there",
                             f"stop that process, or set {key} to a free port in deploykit.toml and run "
                             "`deploykit reload`"))
        elif pids:
            out.append(Check("ports", OK, f"port {port} ({key}) is held by this deployment ({expected})"))
        else:
            out.append(Check("ports", OK, f"port {port} ({key}) is free (nothing listens on it)"))
    return out


# -- certificate, HTTPS, Host/Origin, WebSocket -------------------------------------------------

def _cert_fix(ctx: Context) -> str:
    mode = ctx.spec.tls.mode
    if mode == "self-signed":
        return "`deploykit reload` replaces a self-signed certificate that has fewer than 30 days left"
    if mode == "letsencrypt":
        return "`deploykit cert renew` renews it now; `deploykit cert status` shows whether renewal is scheduled"
    return (f"install a renewed certificate at {ctx.spec.tls.cert} (key: {ctx.spec.tls.key}), then run "
            "`deploykit reload`")


def check_certificate(ctx: Context) -> list[Check]:
    from deploykit import certs
    from deploykit.status import WARN_DAYS, served_cert_path

    if not ctx.tls:
        return [Check("certificate", SKIPPED, "TLS is off")]
    path = served_cert_path(ctx.spec, ctx.paths)
    try:
        file_pem = path.read_bytes()
        file_cert = certs.load_chain(file_pem)[0]
    except (OSError, ValueError, IndexError) as exc:
        return [Check("certificate", FINDING, f"cannot read {path}: {exc}", _cert_fix(ctx))]
    out = []
    cert = file_cert
    probe = getattr(certs, "probe_served_cert", None)
    served = probe(ctx.spec.deployment.domain, ctx.spec.http.https_port) if probe and ctx.nginx_pid else None
    if served is not None and served != file_cert:
        out.append(Check("certificate", FINDING, f"nginx serves another certificate than {path} "
                                                 "(the file changed and nginx was not reloaded)",
                         f"reload nginx: `kill -HUP $(cat {ctx.paths.nginx_pid})`"))
        cert = served
    from cryptography.hazmat.primitives import serialization

    info = certs.read_cert_info(cert.public_bytes(serialization.Encoding.PEM))
    now = dt.datetime.now(dt.timezone.utc)
    days = info.days_left(now)
    where = "served" if cert is served else f"in {path}"
    if info.not_before > now:
        out.append(Check("certificate", FINDING, f"the certificate {where} is not valid before "
                                                 f"{info.not_before:%Y-%m-%d %H:%M} UTC: this host's clock is "
                                                 "behind", "set the clock (run an NTP client such as chrony)"))
    if days < 0:
        out.append(Check("certificate", FINDING, f"the certificate {where} expired on {info.not_after:%Y-%m-%d}",
                         _cert_fix(ctx)))
    elif days < WARN_DAYS:
        out.append(Check("certificate", FINDING, f"the certificate {where} expires in {days} days "
                                                 f"({info.not_after:%Y-%m-%d %H:%M} UTC)", _cert_fix(ctx)))
    if not info.covers(ctx.spec.deployment.domain):
        out.append(Check("certificate", FINDING, f"the certificate {where} is for {', '.join(info.sans) or '?'}, "
                                                 f"not {ctx.spec.deployment.domain}", _cert_fix(ctx)))
    if not out:
        out.append(Check("certificate", OK, f"{info.subject}, {days} days left"
                                            + (", the one nginx serves" if served is not None else "")))
    return out


def _probe(ctx: Context, path: str, headers: dict | None = None):
    from deploykit.verify import Probe, probe_http

    if ctx.https_timed_out:
        return Probe(False, None, "not tried: the first request through nginx timed out")
    t = ctx.desired.verify
    return probe_http(t.domain, t.port, path, t.tls, t.cafile, headers=headers)


def check_https(ctx: Context) -> list[Check]:
    from deploykit.verify import probe_jupyter_api

    if ctx.desired is None:
        return [Check("https", SKIPPED, "no desired state (see spec)")]
    t = ctx.desired.verify
    p = probe_jupyter_api(t.domain, t.port, t.path, t.tls, t.cafile)
    ctx.https_timed_out = "timed out" in p.detail
    if p.ok:
        return [Check("https", OK, f"{p.detail} at {ctx.desired.url}")]
    if p.status in (502, 503, 504):
        fix = f"nginx cannot reach Jupyter: see the programs and ports checks, and {ctx.paths.log_dir}"
    elif ctx.https_timed_out:
        fix = ("nginx accepted the request but no answer came: whatever listens on Jupyter's port does not "
               "answer (see the ports check)")
    elif p.status is None:
        fix = f"nginx does not answer on port {t.port}: see the nginx and ports checks"
    else:
        fix = f"see {ctx.paths.log('nginx-error')} and {ctx.paths.log_dir}"
    return [Check("https", FINDING, f"{ctx.desired.url}{t.path[len(ctx.spec.http.base_url):]} through nginx: "
                                    f"{p.detail}", fix)]


def read_proxy_location(ctx: Context, uri: str):
    """The nginx configuration on disk as it applies to uri: (http block, [http, server, location]).

    Raises LookupError naming what is missing (no server for the domain and port, no location).
    """
    from deploykit import nginxconf

    tree = nginxconf.read_config(ctx.paths.nginx_main_conf, ctx.paths.etc_nginx)
    server = nginxconf.find_server(tree, ctx.public_port, ctx.spec.deployment.domain)
    if server is None:
        raise LookupError(f"no server block listens on port {ctx.public_port} for {ctx.spec.deployment.domain}")
    location = nginxconf.find_location(server, uri)
    if location is None:
        raise LookupError(f"no location serves {uri}")
    http = next(d for d in tree if d.name == "http")
    return http, [http, server, location]


def _proxy_headers(levels) -> dict[str, str]:
    from deploykit import nginxconf

    return {d.args[0].lower(): d.args[1] for d in nginxconf.effective(levels, "proxy_set_header") if len(d.args) == 2}


def read_host_header_problem(ctx: Context) -> str | None:
    """What is wrong with the Host nginx gives Jupyter, which must be what the browser sent."""
    from deploykit.nginxconf import ConfigError

    try:
        _, levels = read_proxy_location(ctx, ctx.spec.http.base_url + "api")
    except (ConfigError, LookupError, OSError, UnicodeDecodeError):
        return None
    host = _proxy_headers(levels).get("host", "$proxy_host")
    good = {"$http_host", "$host:$server_port"}
    if ctx.public_port in (80, 443):
        good.add("$host")
    if host in good:
        return None
    return (f"nginx gives Jupyter the Host {host!r} instead of the one the browser sent "
            f"(proxy_set_header Host $http_host), so Jupyter's Host and Origin checks fail")


def check_host_origin(ctx: Context) -> list[Check]:
    """Jupyter answers 403 to a Host it does not know, and 404 to an API request whose Origin is not its Host."""
    if ctx.desired is None:
        return [Check("host-origin", SKIPPED, "no desired state (see spec)")]
    fix = "`deploykit reload` restores deploykit's proxy settings (proxy_set_header Host $http_host)"
    static = read_host_header_problem(ctx)
    t = ctx.desired.verify
    p = _probe(ctx, t.path, {"Origin": ctx.origin})
    if p.status == 200 and not static:
        return [Check("host-origin", OK, f"Jupyter accepts Host {ctx.spec.deployment.domain} and Origin {ctx.origin}")]
    if p.status == 200:
        return [Check("host-origin", FINDING, static, fix)]
    if p.status == 403:
        return [Check("host-origin", FINDING, static or f"Jupyter refuses the Host {ctx.spec.deployment.domain!r} "
                                                     "(HTTP 403): it is not in ServerApp.local_hostnames",
                      fix if static else "`deploykit reload` writes deploykit's Jupyter configuration back")]
    if p.status == 404 and _probe(ctx, t.path).status == 200:
        return [Check("host-origin", FINDING, static or f"Jupyter refuses requests from Origin {ctx.origin}: it "
                                                        "sees another Host than the browser sent", fix)]
    if static:
        return [Check("host-origin", FINDING, static, fix)]
    return [Check("host-origin", SKIPPED, f"HTTPS through nginx fails ({p.detail}; see https)")]


def _websocket_uri(ctx: Context) -> str:
    base = ctx.spec.http.base_url
    if ctx.spec.deployment.mode == "hub":
        return base + "user/doctor/api/kernels/doctor/channels"
    return base + "api/kernels/doctor/channels"


def read_websocket_config(ctx: Context) -> tuple[list[str], str]:
    """Problems with how the nginx configuration on disk proxies a kernel WebSocket, and where it is set."""
    from deploykit import nginxconf

    try:
        http, levels = read_proxy_location(ctx, _websocket_uri(ctx))
    except LookupError as exc:
        return [str(exc)], str(ctx.paths.nginx_main_conf)
    location = levels[-1]
    problems = []
    if not location.children("proxy_pass"):
        problems.append(f"location {' '.join(location.args)} does not proxy_pass to Jupyter")
    version = nginxconf.effective(levels, "proxy_http_version")
    if not version or version[-1].args[:1] != ["1.1"]:
        problems.append("proxy_http_version is not 1.1 (WebSockets need HTTP/1.1 to Jupyter)")
    headers = _proxy_headers(levels)
    if headers.get("upgrade") != "$http_upgrade":
        problems.append("the Upgrade header is not passed on (`proxy_set_header Upgrade $http_upgrade;` missing)")
    connection = headers.get("connection", "")
    if connection.lower() != "upgrade" and nginxconf.maps(http).get(connection) != "$http_upgrade":
        problems.append("the Connection header does not carry 'upgrade' (`proxy_set_header Connection ...` "
                        "missing or wrong)")
    return problems, location.file


def check_websocket(ctx: Context) -> list[Check]:
    from deploykit.nginxconf import ConfigError

    out = []
    try:
        problems, where = read_websocket_config(ctx)
    except (ConfigError, OSError, UnicodeDecodeError) as exc:
        problems, where = [f"cannot read the nginx configuration: {exc}"], str(ctx.paths.nginx_main_conf)
    if problems:
        out.append(Check("websocket", FINDING, f"nginx ({where}) would not pass WebSocket upgrades to Jupyter: "
                                               + "; ".join(problems) + ". Kernels and terminals cannot connect",
                         "`deploykit reload` restores deploykit's proxy settings (make lasting changes in "
                         "deploykit.toml, not in nginx's files)"))
    if ctx.desired is None or ctx.nginx_pid is None:
        return out or [Check("websocket", SKIPPED, "nginx is not running (see nginx)")]
    # Jupyter answers an unauthenticated handshake itself (403), so this shows the route reaches
    # Jupyter, not that the upgrade would succeed: that is what the configuration check above is for.
    path = ctx.spec.http.base_url + ("hub/api/" if ctx.spec.deployment.mode == "hub" else "api/events/subscribe")
    p = _probe(ctx, path, {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                           "Sec-WebSocket-Key": "ZGVwbG95a2l0LWRvY3Rvcg==", "Origin": ctx.origin})
    from_jupyter = "security/csp-report" in p.headers.get("content-security-policy", "")
    if ctx.https_timed_out:
        out.append(Check("websocket", SKIPPED, "HTTPS through nginx times out (see https)"))
    elif p.status is None or p.status in (502, 503, 504):
        out.append(Check("websocket", FINDING, f"a WebSocket handshake to {path} does not reach Jupyter ({p.detail})",
                         "see the programs and https checks"))
    elif not from_jupyter and p.status != 101:
        out.append(Check("websocket", FINDING, f"a WebSocket handshake to {path} is answered by nginx "
                                               f"({p.detail}), not by Jupyter",
                         "`deploykit reload` restores deploykit's nginx locations"))
    elif not problems:
        out.append(Check("websocket", OK, f"nginx passes Upgrade and Connection with HTTP/1.1 for "
                                          f"{_websocket_uri(ctx)}; a handshake reaches Jupyter ({p.detail})"))
    return out


# -- configuration drift ------------------------------------------------------------------------

def check_spec(ctx: Context) -> list[Check]:
    from deploykit.apply import Engine
    from deploykit.display import Reporter

    if ctx.desired is None:
        return [Check("spec", FINDING, f"the configuration cannot be built from {ctx.paths.spec}: "
                                       f"{ctx.desired_error}", "fix what it says, then run `deploykit reload`")]
    _, plan = Engine(ctx.paths, ctx.host, Reporter(quiet=True)).make_plan(ctx.desired)
    changes = [c for c in plan.changes if c.path != ctx.paths.record]
    if not changes:
        return [Check("spec", OK, f"the {len(ctx.desired.files)} files deploykit writes match {ctx.paths.spec}")]
    what = {"create": "missing", "update": "edited", "mode": "mode changed", "delete": "left over",
            "link": "link changed"}
    shown = ", ".join(f"{c.path} ({what.get(c.action, c.action)})" for c in changes[:4])
    more = f" and {len(changes) - 4} more" if len(changes) > 4 else ""
    return [Check("spec", FINDING, f"{len(changes)} file(s) differ from what {ctx.paths.spec} gives: {shown}{more}",
                  "`deploykit plan` shows the differences; `deploykit reload` puts deploykit's configuration "
                  "back (make lasting changes in deploykit.toml)")]


def check_permissions(ctx: Context) -> list[Check]:
    if ctx.desired is None:
        return [Check("permissions", SKIPPED, "no desired state (see spec)")]
    try:
        default_uid = ctx.paths.state_dir.stat().st_uid
    except OSError:
        return [Check("permissions", SKIPPED, f"{ctx.paths.state_dir} is missing")]
    bad = []
    for d in ctx.desired.dirs:
        try:
            st = d.path.stat()
        except OSError:
            continue
        if d.mode & 0o077 == 0 and stat.S_IMODE(st.st_mode) & 0o077:
            bad.append(f"{d.path} is {stat.S_IMODE(st.st_mode):04o}, not {d.mode:04o}")
    for f in ctx.desired.files:
        if not (f.secret or f.mode & 0o077 == 0):
            continue
        try:
            st = f.path.stat()
        except OSError:
            continue
        uid = pwd.getpwnam(f.owner).pw_uid if f.owner else default_uid
        if stat.S_IMODE(st.st_mode) & 0o077:
            bad.append(f"{f.path} is {stat.S_IMODE(st.st_mode):04o} (readable by others), not {f.mode:04o}")
        if st.st_uid != uid:
            bad.append(f"{f.path} is owned by uid {st.st_uid}, not {uid}")
    if bad:
        return [Check("permissions", FINDING, "; ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else ""),
                      "`deploykit reload` sets deploykit's modes and owners again")]
    return [Check("permissions", OK, "secret files 0600 and private directories 0700, owned as deploykit set them")]


# -- the host -----------------------------------------------------------------------------------

def _is_local_address(addr: str) -> bool:
    """Whether addr is one of this host's own: only those can be bound."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((addr, 0))
        return True
    except OSError:
        return False


def read_host_addresses() -> list[str]:
    out = []
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        for prev, line in zip(lines, lines[1:]):
            if line.strip() == "/32 host LOCAL" and "|--" in prev:
                addr = prev.split("|--")[1].strip()
                if addr not in out:
                    out.append(addr)
    except OSError:
        pass
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            out.append(str(ipaddress.ip_address(":".join(raw[i:i + 4] for i in range(0, 32, 4)))))
    except (OSError, ValueError):
        pass
    return out


def check_dns(ctx: Context) -> list[Check]:
    from deploykit import validate as v

    domain = ctx.spec.deployment.domain
    if v.is_ip(domain):
        addrs = [domain]
    else:
        try:
            infos = socket.getaddrinfo(domain, None, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError) as exc:
            where = ("names under .test, .local and the like are in no public DNS: add "
                     f"'<this host's address> {domain}' to /etc/hosts on each client, or use a real name"
                     if v.is_local_name(domain) else
                     f"create A (and AAAA) records for {domain} pointing at this host's public address")
            return [Check("dns", FINDING, f"{domain} does not resolve ({getattr(exc, 'strerror', None) or exc})", where)]
        addrs = list(dict.fromkeys(i[4][0].split("%")[0] for i in infos))
    local = [a for a in addrs if _is_local_address(a)]
    if local:
        return [Check("dns", OK, f"{domain} resolves to {', '.join(addrs)}: this host")]
    mine = [a for a in read_host_addresses() if not ipaddress.ip_address(a).is_loopback]
    if mine and all(ipaddress.ip_address(a).is_private for a in mine) and all(
            ipaddress.ip_address(a).is_global for a in addrs):
        return [Check("dns", NOTE, f"{domain} resolves to {', '.join(addrs)}, not an address of this host; this "
                                   f"host has only private addresses ({', '.join(mine[:4])}), so it is presumably "
                                   "forwarded here (NAT), which cannot be confirmed from inside")]
    return [Check("dns", FINDING, f"{domain} resolves to {', '.join(addrs)}, none of which is this host's "
                                  f"({', '.join(mine[:4]) or 'no addresses found'})",
                  f"point the A/AAAA records of {domain} at this host (browsers and Let's Encrypt go where DNS says)")]


def read_clock_sync() -> tuple[bool, float] | None:
    """(synchronised by NTP, estimated max error in seconds) from the kernel (adjtimex), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex; modes = 0 only reads
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    maxerror_us = int.from_bytes(buf.raw[24:32], "little", signed=True) if ctypes.sizeof(ctypes.c_long) == 8 else 0
    return state != 5, maxerror_us / 1e6  # 5 = TIME_ERROR: the clock is not synchronised


def check_clock(ctx: Context) -> list[Check]:
    now = time.time()
    newest = 0.0
    for p in (ctx.paths.record, ctx.paths.spec):
        try:
            newest = max(newest, p.stat().st_mtime)
        except OSError:
            continue
    if newest > now + CLOCK_FUTURE_SLACK:
        return [Check("clock", FINDING, f"{ctx.paths.record} was written {newest - now:.0f} s in the future: "
                                        "the clock went back", "set the clock (run an NTP client such as chrony)")]
    sync = read_clock_sync()
    if sync is None:
        return [Check("clock", SKIPPED, "cannot read the kernel's clock state; skew cannot be measured offline")]
    synced, maxerror = sync
    if synced:
        return [Check("clock", OK, f"synchronised by NTP (kernel's estimated maximum error {maxerror:.3f} s)")]
    return [Check("clock", NOTE, "not synchronised by NTP, and skew cannot be measured offline; TLS certificates "
                                 "and login cookies need the right time: run an NTP client (chrony or "
                                 "systemd-timesyncd)")]


def _mount_of(path: Path) -> Path:
    path = path.resolve()
    dev = path.stat().st_dev
    while path.parent != path and path.parent.stat().st_dev == dev:
        path = path.parent
    return path


def check_disk(ctx: Context) -> list[Check]:
    from deploykit.desired import notebook_dir

    dirs = [ctx.paths.state_dir, ctx.paths.log_dir, Path(notebook_dir(ctx.spec, ctx.paths)), ctx.paths.checkpoints]
    seen, out = set(), []
    for d in dirs:
        try:
            st = d.stat()
        except OSError:
            continue
        if st.st_dev in seen:
            continue
        seen.add(st.st_dev)
        usage = shutil.disk_usage(d)
        vfs = os.statvfs(d)
        mount = _mount_of(d)
        gib = usage.free / (1 << 30)
        fraction = usage.free / usage.total if usage.total else 1.0
        inodes = vfs.f_favail / vfs.f_files if vfs.f_files else 1.0
        if usage.free < DISK_MIN_FREE or fraction < DISK_MIN_FRACTION or inodes < DISK_MIN_FRACTION:
            out.append(Check("disk", FINDING, f"{mount} (holding {d}) is nearly full: {gib:.1f} GiB free "
                                              f"({fraction:.0%}), {inodes:.0%} of inodes free",
                             f"free space there: Jupyter cannot save notebooks and the logs stop when it is full "
                             f"(logs: {ctx.paths.log_dir}, old checkpoints: {ctx.paths.checkpoints})"))
        else:
            out.append(Check("disk", OK, f"{mount}: {gib:.1f} GiB free ({fraction:.0%})"))
    return out or [Check("disk", SKIPPED, "none of the deployment's directories exists")]


CHECKS = (check_supervisord, check_programs, check_nginx, check_ports, check_spec, check_permissions,
          check_certificate, check_https, check_host_origin, check_websocket, check_dns, check_clock, check_disk)


def run_checks(spec, paths, host) -> list[Check]:
    ctx = probe_context(spec, paths, host)
    out: list[Check] = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_").replace("_", "-")
        try:
            out += check(ctx)
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            out.append(Check(name, FINDING, f"the check itself failed: {type(exc).__name__}: {exc}",
                             "report this as a deploykit bug"))
    return out


def render_report(spec, paths, checks: list[Check]) -> str:
    label = {OK: "ok", FINDING: "FINDING", NOTE: "note", SKIPPED: "skipped"}
    lines = [f"deploykit doctor: {spec.deployment.domain} ({spec.deployment.mode} mode, "
             f"{spec.deployment.target} target) in {paths.state_dir}"]
    for c in checks:
        lines.append(f"  {label[c.status]:<8} {c.name:<12} {c.detail}")
        if c.fix and c.status == FINDING:
            lines.append(f"  {'':<8} {'':<12} fix: {c.fix}")
    findings = sum(c.status == FINDING for c in checks)
    lines.append(f"{findings} finding(s)" if findings else "healthy: no findings")
    return "\n".join(lines)


def run_doctor(state_dir: Path, root: Path, as_json: bool) -> int:
    from deploykit.provision import load_deployment

    spec, paths, host = load_deployment(state_dir, root)
    checks = run_checks(spec, paths, host)
    findings = sum(c.status == FINDING for c in checks)
    if as_json:
        click.echo(json.dumps({"domain": spec.deployment.domain, "state_dir": str(paths.state_dir),
                               "healthy": findings == 0, "findings": findings,
                               "checks": [c.as_dict() for c in checks]}, indent=1))
    else:
        click.echo(render_report(spec, paths, checks))
    return 1 if findings else 0
