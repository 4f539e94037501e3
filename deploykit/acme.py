"""Let's Encrypt (ACME) through certbot's CLI: preflight, issuance, renewal and its schedule.

certbot speaks ACME with its webroot plugin, never its nginx plugin: deploykit owns nginx's
configuration and switches it to the issued certificate through the engine (validate, reload,
verify, roll back) like any other change. Before asking the CA, deploykit fetches a token it
placed in the webroot through the domain's real address, so a wrong DNS record or a closed
port is reported precisely instead of burning the CA's rate limit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import os
import secrets
import shlex
import socket
import subprocess
import time
from pathlib import Path

from deploykit import certs, fsio
from deploykit import validate as v
from deploykit.desired import FileSpec
from deploykit.errors import BadInput, OperationFailed
from deploykit.host import Host
from deploykit.paths import Paths
from deploykit.render import render_template
from deploykit.spec import Spec

CHALLENGE_DIR = ".well-known/acme-challenge"
CERTBOT_TIMEOUT = 900
# Set by deploykit for the certbot it runs: the deploy hook must not wait for a lock its parent holds.
LOCK_HELD_ENV = "DEPLOYKIT_LOCK_HELD"
# Set when provision runs certbot: provision switches nginx itself once certbot returns.
HOOK_SKIP_ENV = "DEPLOYKIT_DEPLOY_HOOK_SKIP"
CRON_NAME = "deploykit-certbot"
TIMER_NAME = "deploykit-certbot"


@dataclasses.dataclass(frozen=True)
class CertbotDirs:
    config: Path
    work: Path
    logs: Path

    @property
    def log_file(self) -> Path:
        return self.logs / "letsencrypt.log"

    def args(self) -> list[str]:
        return ["--config-dir", str(self.config), "--work-dir", str(self.work), "--logs-dir", str(self.logs)]


def certbot_dirs(paths: Paths) -> CertbotDirs:
    if paths.target == "local":
        return CertbotDirs(paths.certbot_dir, paths.certbot_dir / "work", paths.certbot_dir / "logs")
    return CertbotDirs(paths.certbot_dir, paths.root / "var/lib/letsencrypt", paths.root / "var/log/letsencrypt")


def lineage_dir(paths: Paths, domain: str) -> Path:
    # --cert-name is always the domain, so the lineage never becomes live/<domain>-0001.
    return certbot_dirs(paths).config / "live" / domain


def renewal_conf_path(paths: Paths, domain: str) -> Path:
    return certbot_dirs(paths).config / "renewal" / f"{domain}.conf"


def issued_paths(paths: Paths, domain: str) -> tuple[Path, Path] | None:
    """certbot's fullchain and key for domain, when they exist and nginx could serve them."""
    live = lineage_dir(paths, domain)
    cert, key = live / "fullchain.pem", live / "privkey.pem"
    try:
        cert_pem, key_pem = cert.read_bytes(), key.read_bytes()
        info = certs.read_cert_info(cert_pem)
        usable = info.covers(domain) and info.days_left() >= 0 and certs.key_matches(cert_pem, key_pem)
    except (OSError, ValueError, TypeError):
        return None
    return (cert, key) if usable else None


def read_issued_info(paths: Paths, domain: str) -> certs.CertInfo | None:
    try:
        return certs.read_cert_info((lineage_dir(paths, domain) / "fullchain.pem").read_bytes())
    except (OSError, ValueError):
        return None


# -- running certbot --------------------------------------------------------------------------

def check_acme_input(spec: Spec) -> None:
    """What can be checked before anything is written (provision calls it before the state dir exists)."""
    bundle = spec.tls.acme_ca_bundle
    if bundle:
        try:
            found = certs.load_chain(Path(bundle).read_bytes())
        except OSError as exc:
            raise BadInput("--acme-ca-bundle", bundle, f"cannot read it ({exc.strerror or exc})") from None
        except ValueError:
            found = []
        if not found:
            raise BadInput("--acme-ca-bundle", bundle, "no PEM certificate in it; expected the CA that signs "
                                                       "the ACME server's HTTPS certificate")


def certbot_command(host: Host) -> list[str]:
    """certbot from deploykit's own environment (a dependency), whatever PATH says."""
    beside = Path(host.python).parent / "certbot"
    if os.access(beside, os.X_OK):
        return [str(beside)]
    return [host.python, "-c", "import sys; from certbot.main import main; sys.exit(main())"]


def deploy_hook_command(paths: Paths, host: Host) -> str:
    """The shell command certbot stores in the renewal config and runs after each renewal."""
    argv = [host.python, "-m", "deploykit", "cert", "deploy-hook", "--state-dir", str(paths.state_dir)]
    if paths.root != Path("/"):
        argv += ["--root", str(paths.root)]
    return shlex.join(argv)


def server_args(spec: Spec) -> list[str]:
    if spec.tls.acme_server:
        return ["--server", spec.tls.acme_server]
    return ["--staging"] if spec.tls.staging else []


def certbot_env(spec: Spec, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    if spec.tls.acme_ca_bundle:
        # certbot's HTTP client (requests) reads its trust anchors from here.
        env["REQUESTS_CA_BUNDLE"] = spec.tls.acme_ca_bundle
    env.update(extra)
    return env


def run_certbot(spec: Spec, paths: Paths, host: Host, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    dirs = certbot_dirs(paths)
    # certbot makes its own directories (with its own modes); an existing /etc/letsencrypt is left as it is.
    argv = [*certbot_command(host), *args, *dirs.args(), "--non-interactive"]
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=CERTBOT_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise OperationFailed(f"certbot did not finish within {CERTBOT_TIMEOUT} s; certbot's log: {dirs.log_file}") from None


def summarize_certbot_output(text: str) -> str:
    """The lines of certbot's output that say what went wrong, without its boilerplate."""
    noise = ("Saving debug log", "Ask for help", "See the logfile", "Some challenges have failed",
             "Requesting a certificate", "Account registered", "Hint:", "The Certificate Authority failed")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(noise)]
    details = [ln for ln in lines if ln.startswith(("Detail:", "Type:", "Domain:"))]
    if details:
        return "; ".join(details)[:600]
    for i, ln in enumerate(lines[:-1]):
        if ln.endswith("error occurred:"):
            return f"{ln} {lines[i + 1]}"[:600]
    return "; ".join(lines[-3:])[:600] or "no output"


def certbot_failure(what: str, res: subprocess.CompletedProcess, paths: Paths, still: str) -> OperationFailed:
    return OperationFailed(f"certbot could not {what} (exit {res.returncode}): "
                           f"{summarize_certbot_output(res.stderr + res.stdout)}\n"
                           f"certbot's log: {certbot_dirs(paths).log_file}\n{still}")


def apply_certonly(spec: Spec, paths: Paths, host: Host) -> None:
    domain = spec.deployment.domain
    args = ["certonly", "--webroot", "-w", str(paths.acme_webroot), "-d", domain, "--cert-name", domain,
            "--agree-tos", "-m", spec.tls.email, "--no-eff-email", "--keep-until-expiring",
            "--deploy-hook", deploy_hook_command(paths, host), *server_args(spec)]
    res = run_certbot(spec, paths, host, args, certbot_env(spec, **{HOOK_SKIP_ENV: "1", LOCK_HELD_ENV: str(paths.lock)}))
    if res.returncode != 0:
        raise certbot_failure(f"get a certificate for {domain}", res, paths,
                              "nginx still serves the previous certificate and configuration")


def apply_renew(spec: Spec, paths: Paths, host: Host, force: bool) -> subprocess.CompletedProcess:
    domain = spec.deployment.domain
    # Random sleep is for unattended fleets; the schedule already spreads deploykit's runs.
    args = ["renew", "--cert-name", domain, "--no-random-sleep-on-renew",
            "--deploy-hook", deploy_hook_command(paths, host), *(["--force-renewal"] if force else [])]
    res = run_certbot(spec, paths, host, args, certbot_env(spec, **{LOCK_HELD_ENV: str(paths.lock)}))
    if res.returncode != 0:
        raise certbot_failure(f"renew the certificate for {domain}", res, paths,
                              "nginx still serves the current certificate")
    return res


# -- preflight --------------------------------------------------------------------------------

def validation_port(spec: Spec) -> int:
    """The port the CA fetches the challenge from: always 80 for Let's Encrypt; another ACME
    server (--acme-server, e.g. Pebble) is assumed to use the deployment's HTTP port."""
    return spec.http.http_port if spec.tls.acme_server else 80


def _fetch(address: str, port: int, domain: str, path: str, timeout: float) -> tuple[int | None, bytes, str]:
    host = domain if port == 80 else f"{domain}:{port}"
    try:
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
        conn.request("GET", path, headers={"Host": host, "User-Agent": "deploykit-acme-preflight"})
        res = conn.getresponse()
        body = res.read(4096)
        conn.close()
        return res.status, body, ""
    except (OSError, http.client.HTTPException) as exc:
        return None, b"", (exc.strerror if isinstance(exc, OSError) and exc.strerror else
                           type(exc).__name__ + (f": {exc}" if str(exc) else ""))


def probe_challenge(domain: str, port: int, path: str, expected: bytes, timeout: float = 10.0) -> str | None:
    """Why the CA could not fetch http://domain:port/path with content expected, or None if it could."""
    url = f"http://{domain}{'' if port == 80 else f':{port}'}{path}"
    try:
        infos = socket.getaddrinfo(domain, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return (f"{domain} does not resolve ({exc.strerror}): add a DNS A (and/or AAAA) record pointing "
                "to this server, then run `deploykit cert renew`")
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    failed = []
    for address in addresses:
        status, body, err = _fetch(address, port, domain, path, timeout)
        if body.strip() != expected:
            failed.append((address, status, err))
    if not failed:
        return None
    # Whether this nginx serves the token at all tells a DNS or firewall problem from a local one.
    local_status, local_body, local_err = _fetch("127.0.0.1", port, domain, path, timeout)
    served_here = local_body.strip() == expected
    problems = []
    for address, status, err in failed:
        if err and served_here:
            problems.append(f"port {port} is unreachable at {address} ({err}), though this nginx answers on "
                            f"127.0.0.1: a firewall blocks port {port}, or DNS for {domain} points elsewhere")
        elif err:
            problems.append(f"port {port} is unreachable at {address} ({err}), and this nginx does not answer on "
                            f"127.0.0.1 either: is it listening on port {port}?")
        elif served_here:
            problems.append(f"DNS for {domain} points to {address}, which is not this server: it answered "
                            f"HTTP {status} without the token this nginx serves")
        else:
            problems.append(f"{address} answered HTTP {status} instead of the token placed in the ACME webroot "
                            f"(also HTTP {local_status or local_err} on 127.0.0.1): this nginx does not serve "
                            f"the webroot (permissions?)")
    return f"the CA could not validate {url}: " + "; ".join(problems)


def check_challenge_path(domain: str, port: int, webroot: Path) -> None:
    """Serve a token from webroot and fetch it as the CA would; OperationFailed with the reason if not."""
    directory = webroot / CHALLENGE_DIR
    # World-readable like certbot's own challenge files: nginx's workers may run as another user.
    fsio.ensure_dir(webroot / ".well-known", 0o755)
    fsio.ensure_dir(directory, 0o755)
    token = "deploykit-preflight-" + secrets.token_urlsafe(16)
    content = secrets.token_hex(16).encode()
    fsio.apply_write_atomic(directory / token, content + b"\n", 0o644)
    try:
        problem = probe_challenge(domain, port, f"/{CHALLENGE_DIR}/{token}", content)
    finally:
        fsio.apply_remove(directory / token)
    if problem:
        raise OperationFailed(f"not asking the CA (which would fail and count against its rate limit): {problem}")


# -- issuance and switching nginx ---------------------------------------------------------------

def nginx_uses_issued(paths: Paths, domain: str) -> bool:
    try:
        site = paths.nginx_site.read_text()
    except OSError:
        return False
    return f" {lineage_dir(paths, domain) / 'fullchain.pem'};" in site


def describe(info: certs.CertInfo | None) -> str:
    if info is None:
        return "no certificate"
    return f"serial {info.serial:x} from {info.issuer}, {info.days_left()} days left"


def apply_issued(spec: Spec, paths: Paths, host: Host, engine, reporter) -> None:
    """Re-render with certbot's certificate and apply it (validate, reload, verify, or roll back)."""
    from deploykit.provision import build_desired

    with reporter.step("render") as out:
        desired, materials = build_desired(spec, paths, host)
        desired, plan = engine.make_plan(desired)
        out["text"] = f"nginx -> {materials.cert_path}"
    if not plan.empty:
        engine.apply(desired, plan, note="certificate")


def ensure_certificate(spec: Spec, paths: Paths, host: Host, engine, reporter) -> None:
    """Get the certificate when there is none usable, then make nginx serve it."""
    domain = spec.deployment.domain
    if issued_paths(paths, domain) is None:
        port = validation_port(spec)
        with reporter.step("preflight") as out:
            check_challenge_path(domain, port, paths.acme_webroot)
            out["text"] = f"http://{domain}:{port}/{CHALLENGE_DIR}/ is served by this nginx"
        with reporter.step("certbot") as out:
            apply_certonly(spec, paths, host)
            if issued_paths(paths, domain) is None:
                raise OperationFailed(f"certbot reported success, but {lineage_dir(paths, domain)} holds no usable "
                                      f"certificate for {domain}; certbot's log: {certbot_dirs(paths).log_file}")
            out["text"] = "issued: " + describe(read_issued_info(paths, domain))
    else:
        with reporter.step("certbot") as out:
            out["text"] = "not asking: " + describe(read_issued_info(paths, domain))
    if not nginx_uses_issued(paths, domain):
        apply_issued(spec, paths, host, engine, reporter)
    apply_renewal_schedule(spec, paths, host, reporter)


# -- the deploy hook: reload nginx when the certificate changed -----------------------------------

def reload_if_changed(spec: Spec, paths: Paths, host: Host, timeout: float = 30.0) -> str:
    """nginx -t and a graceful reload, only when nginx serves something else than certbot's current
    certificate; waits until the new one is served. Returns what happened."""
    from deploykit.nginx import Nginx

    domain = spec.deployment.domain
    if issued_paths(paths, domain) is None:
        raise OperationFailed(f"no usable certificate in {lineage_dir(paths, domain)}; nginx left as it is")
    if not nginx_uses_issued(paths, domain):
        return (f"nginx is not configured with certbot's certificate yet ({paths.nginx_site}); "
                "run `deploykit reload` to switch it")
    nginx = Nginx(paths, host.nginx)
    if nginx.probe_pid() is None:
        return "nginx is not running; it will serve the new certificate when it starts"
    live = certs.load_chain((lineage_dir(paths, domain) / "fullchain.pem").read_bytes())[0]
    want = certs.fingerprint(live)
    port = spec.http.https_port
    served = certs.probe_served_cert(domain, port)
    if served is not None and certs.fingerprint(served) == want:
        return f"nginx already serves serial {live.serial_number:x}; nothing to reload"
    ok, said = nginx.probe_config()
    if not ok:
        raise OperationFailed(f"nginx -t rejected the configuration with the new certificate; not reloading "
                              f"(nginx keeps serving the previous one): {said}")
    nginx.apply_reload()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        served = certs.probe_served_cert(domain, port)
        if served is not None and certs.fingerprint(served) == want:
            return f"nginx reloaded: serves serial {live.serial_number:x} (not after {live.not_valid_after_utc:%Y-%m-%d})"
        time.sleep(0.1)
    raise OperationFailed(f"nginx was reloaded but does not serve serial {live.serial_number:x} on port {port} "
                          f"after {timeout:.0f} s; see {paths.log('nginx-error')}")


def run_deploy_hook(spec: Spec, paths: Paths, host: Host) -> str:
    from deploykit.lock import deployment_lock

    if os.environ.get(HOOK_SKIP_ENV):
        return "provision switches nginx to the new certificate itself"
    lineage = os.environ.get("RENEWED_LINEAGE")
    if lineage and Path(lineage) != lineage_dir(paths, spec.deployment.domain):
        return f"{lineage} is not this deployment's certificate; nothing to do"
    held = os.environ.get(LOCK_HELD_ENV) == str(paths.lock)
    with contextlib.nullcontext() if held else deployment_lock(paths.lock):
        result = reload_if_changed(spec, paths, host)
    return result


def hook_log_path(paths: Paths) -> Path:
    return paths.log("certbot-deploy-hook")


# -- scheduled renewal (system target) ---------------------------------------------------------

def renewal_command(paths: Paths, host: Host) -> list[str]:
    argv = [host.python, "-m", "deploykit", "cert", "renew", "--state-dir", str(paths.state_dir), "--quiet"]
    if paths.root != Path("/"):
        argv[-1:-1] = ["--root", str(paths.root)]
    for part in argv:
        if part.startswith("/"):
            try:
                v.abs_path(part)
            except v.Invalid as exc:
                raise BadInput("renewal command", part, f"cannot be written into a cron entry or unit: {exc}") from None
    return argv


def schedule_paths(paths: Paths, host: Host) -> list[Path]:
    if host.systemd:
        units = paths.root / "etc/systemd/system"
        return [units / f"{TIMER_NAME}.service", units / f"{TIMER_NAME}.timer"]
    return [paths.root / "etc/cron.d" / CRON_NAME]


def build_renewal_files(spec: Spec, paths: Paths, host: Host) -> list[FileSpec]:
    """The system target's renewal schedule: a systemd timer when systemd runs, else a cron entry."""
    if spec.tls.mode != "letsencrypt" or paths.target != "system":
        return []
    domain = spec.deployment.domain
    command = renewal_command(paths, host)
    if host.systemd:
        service, timer = schedule_paths(paths, host)
        return [FileSpec(service, render_template("certbot/renew.service.j2", domain=domain,
                                                  command=" ".join(command)).encode()),
                FileSpec(timer, render_template("certbot/renew.timer.j2", domain=domain).encode())]
    # A fixed minute per domain spreads many servers' requests over the hour, as the CA asks.
    digest = int(hashlib.sha256(domain.encode()).hexdigest(), 16)
    return [FileSpec(schedule_paths(paths, host)[0], render_template(
        "certbot/cron.j2", domain=domain, minute=digest % 60, hour=(digest // 60) % 12,
        command=" ".join(command)).encode())]


def apply_renewal_schedule(spec: Spec, paths: Paths, host: Host, reporter) -> None:
    """Enable the timer (systemd only; a cron entry needs nothing more than its file)."""
    if paths.target != "system" or not host.systemd or paths.root != Path("/"):
        return
    with reporter.step("renewal") as out:
        for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", f"{TIMER_NAME}.timer"]):
            res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if res.returncode != 0:
                raise OperationFailed(f"{' '.join(argv)} failed: {(res.stderr or res.stdout).strip()}")
        out["text"] = f"{TIMER_NAME}.timer enabled"


def read_renewal_schedule(spec: Spec, paths: Paths) -> str | None:
    """What runs `deploykit cert renew` on its own: a timer, a cron entry, or nothing."""
    units = paths.root / "etc/systemd/system"
    wanted = units / "timers.target.wants" / f"{TIMER_NAME}.timer"
    if wanted.exists():
        return f"systemd timer {TIMER_NAME}.timer"
    cron = paths.root / "etc/cron.d" / CRON_NAME
    if cron.is_file() and str(paths.state_dir) in cron.read_text(errors="replace"):
        return f"cron entry {cron}"
    return None


def read_renewal_hook(paths: Paths, domain: str) -> bool:
    """Whether certbot's renewal config for domain runs deploykit's deploy hook."""
    try:
        text = renewal_conf_path(paths, domain).read_text(errors="replace")
    except OSError:
        return False
    return any(line.split("=", 1)[0].strip() == "renew_hook" and "cert deploy-hook" in line
               and str(paths.state_dir) in line for line in text.splitlines())


def renewal_configured(spec: Spec, paths: Paths) -> bool | None:
    """letsencrypt: certbot can renew it and runs the deploy hook, and (system target) a timer or cron
    entry runs the renewal. Other modes: nothing renews them on its own (None when TLS is off)."""
    if spec.tls.mode == "off":
        return None
    if spec.tls.mode != "letsencrypt":
        return False
    if not read_renewal_hook(paths, spec.deployment.domain):
        return False
    return paths.target == "local" or read_renewal_schedule(spec, paths) is not None


def apply_hook_log(paths: Paths, line: str) -> None:
    fsio.ensure_dir(paths.log_dir, 0o700)
    fd = os.open(hook_log_path(paths), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (time.strftime("%Y-%m-%dT%H:%M:%S%z ") + line.replace("\n", " ") + "\n").encode())
    finally:
        os.close(fd)


# -- what the `cert` commands do ----------------------------------------------------------------

def run_cert_renew(state_dir: Path, root: Path, quiet: bool, force: bool) -> None:
    from deploykit.apply import Engine
    from deploykit.display import Reporter
    from deploykit.lock import deployment_lock
    from deploykit.provision import load_deployment

    spec, paths, host = load_deployment(state_dir, root)
    domain = spec.deployment.domain
    if spec.tls.mode != "letsencrypt":
        raise BadInput(f"{paths.spec}: tls.mode", spec.tls.mode, "`cert renew` renews Let's Encrypt certificates; "
                       + ("replace the files named by tls.cert and tls.key, then run `deploykit reload`"
                          if spec.tls.mode == "manual" else "`deploykit reload` renews a self-signed one when due"))
    reporter = Reporter(quiet)
    engine = Engine(paths, host, reporter)
    with deployment_lock(paths.lock, on_wait=reporter.line):
        reporter.line(f"deploykit cert renew: {domain} in {paths.state_dir}")
        if not renewal_conf_path(paths, domain).exists() or issued_paths(paths, domain) is None:
            # Never issued (or unusable): e.g. provision stopped at a DNS problem since fixed.
            ensure_certificate(spec, paths, host, engine, reporter)
            reporter.always(f"certificate: {describe(read_issued_info(paths, domain))}")
            return
        before = read_issued_info(paths, domain)
        with reporter.step("certbot") as out:
            apply_renew(spec, paths, host, force)
            after = read_issued_info(paths, domain)
            renewed = after is not None and (before is None or after.serial != before.serial)
            out["text"] = ("renewed: " if renewed else "not due: ") + describe(after)
        if issued_paths(paths, domain) is None:
            raise OperationFailed(f"certbot left no usable certificate in {lineage_dir(paths, domain)}; "
                                  f"certbot's log: {certbot_dirs(paths).log_file}")
        if not nginx_uses_issued(paths, domain):
            apply_issued(spec, paths, host, engine, reporter)
        else:
            # The deploy hook has reloaded nginx; this confirms it (and reloads if the hook could not).
            with reporter.step("nginx") as out:
                out["text"] = reload_if_changed(spec, paths, host)
        reporter.always(f"certificate: {describe(read_issued_info(paths, domain))}")


def run_hook(state_dir: Path, root: Path) -> str:
    from deploykit.provision import load_deployment

    spec, paths, host = load_deployment(state_dir, root)
    lineage = os.environ.get("RENEWED_LINEAGE", "(no RENEWED_LINEAGE)")
    try:
        result = run_deploy_hook(spec, paths, host)
    except Exception as exc:
        apply_hook_log(paths, f"{lineage}: FAILED: {exc}")
        raise
    apply_hook_log(paths, f"{lineage}: {result}")
    return result
