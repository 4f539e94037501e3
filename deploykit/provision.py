"""What the provision, reload, stop, rollback and uninstall commands do, above the engine.

Order matters for the "bad input changes nothing" promise: every flag and the merged spec are
checked before the state dir is created or a daemon is touched.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

import click

from deploykit import fsio, validate as v
from deploykit.apply import Engine, restore_checkpoint
from deploykit.desired import DesiredState, FileSpec, build_desired_state
from deploykit.display import Reporter
from deploykit.errors import BadInput, OperationFailed
from deploykit.host import Host, probe_host
from deploykit.lock import deployment_lock
from deploykit.materials import Materials, read_or_make_materials
from deploykit.paths import Paths, paths_for
from deploykit.plan import render_plan
from deploykit.spec import Spec, build_spec, dump_spec, merge, parse_spec

# provision flag -> (section, key)
FLAG_KEYS = {
    "domain": ("deployment", "domain"), "mode": ("deployment", "mode"), "target": ("deployment", "target"),
    "user": ("deployment", "user"), "python_path": ("deployment", "python"),
    "http_port": ("http", "http_port"), "https_port": ("http", "https_port"), "base_url": ("http", "base_url"),
    "upload_limit": ("http", "upload_limit"), "login_rate_limit": ("http", "login_rate_limit"),
    "tls_mode": ("tls", "mode"), "email": ("tls", "email"), "staging": ("tls", "staging"),
    "acme_server": ("tls", "acme_server"), "acme_ca_bundle": ("tls", "acme_ca_bundle"),
    "cert": ("tls", "cert"), "key": ("tls", "key"),
    "notebook_dir": ("notebook", "notebook_dir"),
    "authenticator": ("hub", "authenticator"), "admins": ("hub", "admins"), "allowed": ("hub", "allowed_users"),
    "allow_all": ("hub", "allow_all"), "idle_timeout": ("hub", "idle_timeout"),
    "spawner": ("hub", "spawner"), "mem_limit": ("hub", "mem_limit"), "cpu_limit": ("hub", "cpu_limit"),
}


def read_spec(state_dir: Path) -> Spec | None:
    path = Path(state_dir) / "deploykit.toml"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return parse_spec(text, str(path))


def require_spec(state_dir: Path) -> Spec:
    spec = read_spec(state_dir)
    if spec is None:
        raise BadInput("--state-dir", str(state_dir),
                       "no deployment there (no deploykit.toml); run `deploykit provision` first")
    return spec


def changes_from_flags(opts: dict, existing_mode: str | None = None) -> dict:
    changes: dict = {}
    for flag, (section, key) in FLAG_KEYS.items():
        value = opts.get(flag)
        if value is None or value == ():
            continue
        changes.setdefault(section, {})[key] = list(value) if isinstance(value, tuple) else value
    if opts.get("default_url"):
        # --default-url belongs to the mode given now, else to the existing deployment's mode.
        mode_section = "hub" if (opts.get("mode") or existing_mode) == "hub" else "notebook"
        changes.setdefault(mode_section, {})["default_url"] = opts["default_url"]
    return changes


def default_tls_mode(spec_raw: dict, target: str) -> str:
    domain = spec_raw.get("deployment", {}).get("domain", "")
    if target == "system" and domain and not v.is_local_name(domain):
        return "letsencrypt"
    return "self-signed"


def merged_spec(existing: Spec | None, opts: dict, running_as_root: bool) -> Spec:
    changes = changes_from_flags(opts, existing.deployment.mode if existing else None)
    base = existing.as_dict() if existing else {}
    raw = merge(base, changes)
    dep = raw.setdefault("deployment", {})
    if "domain" not in dep:
        raise BadInput("--domain", "", "required for a new deployment (e.g. --domain jupyter.example.com)")
    if "target" not in dep:
        dep["target"] = "system" if running_as_root else "local"
    if existing is None:
        raw.setdefault("tls", {}).setdefault("mode", default_tls_mode(raw, dep["target"]))
        if dep["target"] == "system" and raw["tls"]["mode"] == "letsencrypt" and not raw["tls"].get("email"):
            raise BadInput("--email", "", f"{dep['domain']} looks public, so the system target gets a Let's Encrypt "
                                          "certificate: pass --email for the ACME account, or --tls self-signed")
    if existing is not None and existing.deployment.target != dep["target"]:
        raise BadInput("--target", dep["target"], f"this deployment was provisioned for the "
                       f"{existing.deployment.target!r} target; use another --state-dir for a new one")
    return build_spec(raw, source="provision")


def resolve_ports(spec: Spec) -> Spec:
    from deploykit.ports import resolve_internal_ports

    internal = spec.as_dict()["internal"]
    resolved = resolve_internal_ports(internal, spec.deployment.mode, {spec.http.http_port, spec.http.https_port})
    return spec if resolved == internal else spec.with_values({"internal": resolved})


def check_ports_set(spec: Spec, state_dir: Path) -> None:
    from deploykit.ports import NEEDED

    for key in NEEDED[spec.deployment.mode]:
        if not getattr(spec.internal, key):
            raise BadInput(f"{state_dir}/deploykit.toml: internal.{key}", 0,
                           "is picked by `deploykit provision`; run it, or set a loopback port")


def obtain_password(opts: dict, reporter: Reporter) -> tuple[str | None, bool]:
    """The Notebook password, and whether deploykit generated it. None: keep the existing one."""
    from deploykit.cli import check_password, read_password_stream

    if opts.get("password_stdin") and opts.get("password_file"):
        raise BadInput("--password-stdin", "", "give either --password-stdin or --password-file, not both")
    if opts.get("password_stdin"):
        return check_password(read_password_stream(sys.stdin, "--password-stdin"), "--password-stdin"), False
    if opts.get("password_file"):
        return check_password(read_password_stream(opts["password_file"], "--password-file"), "--password-file"), False
    return None, False


def check_state_dir(state_dir: Path) -> Path:
    try:
        return Path(v.abs_path(str(state_dir)))
    except v.Invalid as exc:
        raise BadInput("--state-dir", str(state_dir), str(exc)) from None


def prepare_state_dir(state_dir: Path) -> None:
    fsio.ensure_dir(state_dir, 0o700)


def build_desired(spec: Spec, paths: Paths, host: Host, password_hash: str | None = None,
                  spec_text: str | None = None) -> tuple[DesiredState, Materials]:
    """The desired state, the spec file included (as given, or as the operator left it on disk)."""
    materials = read_or_make_materials(spec, paths, password_hash)
    static_dirs = ()
    if spec.http.static_assets:
        from deploykit.desired import jupyter_python
        from deploykit.labassets import probe_static_dirs

        # The system target's nginx workers run as www-data: only directories they can read.
        static_dirs = probe_static_dirs(jupyter_python(spec, host), world_readable=paths.target == "system")
    from deploykit.spawners import probe_spawner_facts

    # The hub checks made the same probe before anything was written; this one renders.
    spawner_facts = probe_spawner_facts(spec, host)
    account = None
    if paths.target == "system":
        from deploykit.system import read_service_account

        account = read_service_account(spec, paths)
    desired = build_desired_state(spec, paths, host, materials, static_dirs, spawner_facts, account)
    if spec_text is None:
        spec_text = paths.spec.read_text()
    desired = dataclasses.replace(desired, files=(FileSpec(paths.spec, spec_text.encode(), 0o600, kind="spec"),
                                                  *desired.files))
    return desired, materials


def check_target_supported(spec: Spec, host: Host, opts: dict | None = None) -> None:
    if spec.deployment.target == "system":
        try:
            from deploykit.system import check_system_target
        except ModuleNotFoundError:
            raise BadInput("--target", "system", "not implemented yet; use --target local") from None
        check_system_target(spec, host, opts or {})
        return  # nginx included; --install-missing may be about to install it
    if not host.nginx:
        raise BadInput("nginx", "", "not found on PATH; install it (apt-get install nginx-light)")


def run_provision(state_dir: str | None, root: Path, quiet: bool, opts: dict) -> None:
    from deploykit.cli import default_state_dir

    reporter = Reporter(quiet)
    host = probe_host()
    target_hint = opts.get("target") or ("system" if host.is_root else "local")
    state = check_state_dir(Path(state_dir) if state_dir else default_state_dir(target_hint))
    existing = read_spec(state)
    spec = merged_spec(existing, opts, host.is_root)
    check_target_supported(spec, host, {**opts, "root": root})
    if spec.tls.mode == "manual":
        from deploykit.manualcert import check_manual_cert

        check_manual_cert(spec)  # before the state dir exists: a bad certificate writes nothing
    elif spec.tls.mode == "letsencrypt":
        from deploykit.acme import check_acme_input

        check_acme_input(spec)
    password, generated = obtain_password(opts, reporter)
    paths = paths_for(spec.deployment.target, state, root)
    if spec.deployment.target == "system":
        from deploykit.system import with_system_defaults

        spec = with_system_defaults(spec, paths)
    if spec.deployment.mode == "notebook" and password is None and not paths.secret("notebook-password.hash").exists():
        password, generated = _ask_or_generate_password()
    hub_opts = {}
    if spec.deployment.mode == "hub":
        from deploykit.hub import check_hub_input

        hub_opts = check_hub_input(spec, opts, paths)
    spec = resolve_ports(spec)
    # Unchanged meaning: keep the operator's text and comments byte for byte.
    spec_text = paths.spec.read_text() if existing == spec else dump_spec(spec)

    from deploykit import passwords

    # The password it already has keeps its stored hash: a new salt would restart Jupyter for nothing.
    same = password is not None and _password_unchanged(paths, password)
    password_hash = passwords.hash_password(password) if password is not None and not same else None
    reporter.line(f"deploykit provision: {spec.deployment.domain} ({spec.deployment.mode} mode, "
                  f"{spec.deployment.target} target) in {state}")
    if opts.get("dry_run"):
        engine = Engine(paths, host, reporter)
        if not state.exists():
            desired, _ = _desired_for_dry_run(spec, paths, host, password_hash, spec_text)
        else:
            desired, _ = build_desired(spec, paths, host, password_hash, spec_text)
        _, plan = engine.make_plan(desired)
        click.echo(render_plan(plan), nl=False)
        return
    prepare_state_dir(state)
    with deployment_lock(paths.lock, on_wait=reporter.line):
        if read_spec(state) != existing:
            raise OperationFailed(f"{paths.spec} changed while this run waited for another deploykit run; "
                                  "this run changed nothing: run the command again")
        if spec.deployment.target == "system":
            from deploykit.system import ensure_system_prerequisites

            ensure_system_prerequisites(spec, paths, host, opts, reporter)
        if spec.deployment.mode == "hub" and host.is_root:
            from deploykit.hub import ensure_proxy_account

            with reporter.step("proxy user") as out:
                out["text"] = ensure_proxy_account(host)
        with reporter.step("render") as out:
            desired, materials = build_desired(spec, paths, host, password_hash, spec_text)
            if hub_opts:
                from deploykit.hub import apply_hub_input

                desired = apply_hub_input(desired, paths, hub_opts)
            engine = Engine(paths, host, reporter)
            desired, plan = engine.make_plan(desired)
            out["text"] = f"{len(desired.files)} files, {len(plan.changes)} to change"
            if materials.made:
                out["text"] += "; made " + ", ".join(materials.made)
        if plan.empty:
            reporter.line(render_plan(plan).rstrip())
        else:
            engine.apply(desired, plan, note="provision")
        if spec.tls.mode == "letsencrypt":
            from deploykit.acme import ensure_certificate

            ensure_certificate(spec, paths, host, engine, reporter)
    _print_result(reporter, spec, paths, generated, password)


def _password_unchanged(paths: Paths, password: str) -> bool:
    from deploykit import passwords
    from deploykit.materials import password_hash_path, read_bytes

    stored = read_bytes(password_hash_path(paths))
    return stored is not None and passwords.verify_password(stored.decode().strip(), password)


def _desired_for_dry_run(spec, paths, host, password_hash, spec_text):
    # A brand-new deployment has no password hash yet; show the plan with a placeholder.
    return build_desired(spec, paths, host, password_hash or "argon2:(set at provision)", spec_text)


def _ask_or_generate_password() -> tuple[str, bool]:
    from deploykit import passwords
    from deploykit.cli import check_password

    if sys.stdin.isatty():
        pw = click.prompt("Notebook password", hide_input=True, confirmation_prompt=True)
        return check_password(pw, "password"), False
    return passwords.generate_password(), True


def _print_result(reporter: Reporter, spec: Spec, paths: Paths, generated: bool, password: str | None) -> None:
    from deploykit.desired import public_url

    reporter.always(f"ready: {public_url(spec)}")
    reporter.line(f"spec: {paths.spec}")
    reporter.line(f"logs: {paths.log_dir}")
    if generated and password:
        # Shown once, here, and nowhere else: only its hash is stored.
        reporter.always(f"generated password (shown only now, store it safely): {password}")
    if spec.deployment.mode == "hub":
        from deploykit.hub import describe_access

        for line in describe_access(spec, paths):
            reporter.always(line)


def load_deployment(state_dir: Path, root: Path) -> tuple[Spec, Paths, Host]:
    state = check_state_dir(state_dir)
    spec = require_spec(state)
    host = probe_host()
    return spec, paths_for(spec.deployment.target, state, root), host


def run_reload(state_dir: Path, root: Path, quiet: bool, dry_run: bool) -> None:
    spec, paths, host = load_deployment(state_dir, root)
    check_ports_set(spec, paths.state_dir)
    if spec.deployment.mode == "hub":
        from deploykit.hub import check_hub_spec

        check_hub_spec(spec, paths)
    reporter = Reporter(quiet)
    engine = Engine(paths, host, reporter)
    if dry_run:
        desired, _ = build_desired(spec, paths, host)
        _, plan = engine.make_plan(desired)
        click.echo(render_plan(plan), nl=False)
        return
    with deployment_lock(paths.lock, on_wait=reporter.line):
        if read_spec(paths.state_dir) != spec:
            # The run that held the lock changed the spec meanwhile: plan from the spec as it is now
            # (the lock is re-entrant), never from the one read before waiting.
            return run_reload(state_dir, root, quiet, dry_run)
        reporter.line(f"deploykit reload: {spec.deployment.domain} in {paths.state_dir}")
        if spec.deployment.mode == "hub" and host.is_root:
            from deploykit.hub import ensure_proxy_account

            with reporter.step("proxy user") as out:
                out["text"] = ensure_proxy_account(host)
        with reporter.step("render") as out:
            desired, _ = build_desired(spec, paths, host)
            desired, plan = engine.make_plan(desired)
            out["text"] = f"{len(desired.files)} files, {len(plan.changes)} to change"
        if plan.empty:
            reporter.line(render_plan(plan).rstrip())
            return
        engine.apply(desired, plan, note="reload")
        reporter.always(f"ready: {desired.url}")


def run_stop(state_dir: Path, root: Path, quiet: bool) -> None:
    spec, paths, host = load_deployment(state_dir, root)
    reporter = Reporter(quiet)
    engine = Engine(paths, host, reporter)
    with deployment_lock(paths.lock, on_wait=reporter.line):
        if spec.deployment.mode == "hub":
            from deploykit.hub import apply_stop_user_servers

            # The hub keeps users' servers across its own restarts, so stopping it would orphan them.
            with reporter.step("user servers") as out:
                stopped = apply_stop_user_servers(spec, paths)
                out["text"] = f"stopped {len(stopped)}" if stopped else "none running"
        with reporter.step("supervisor") as out:
            if paths.target == "local":
                out["text"] = "stopped supervisord and its programs" if engine.supervisor.apply_shutdown() else "was not running"
            else:
                from deploykit.system import stop_system_programs

                out["text"] = stop_system_programs(spec, paths, engine)
        with reporter.step("nginx") as out:
            if paths.target == "local":
                out["text"] = "stopped" if engine.nginx.apply_stop() else "was not running"
            else:
                out["text"] = "left running (the system's nginx serves other sites too)"


def run_rollback(state_dir: Path, root: Path, quiet: bool) -> None:
    from deploykit.checkpoint import list_checkpoints

    spec, paths, host = load_deployment(state_dir, root)
    reporter = Reporter(quiet)
    engine = Engine(paths, host, reporter)
    with deployment_lock(paths.lock, on_wait=reporter.line):
        done = list_checkpoints(paths.checkpoints, "done")
        if not done:
            raise OperationFailed(f"no checkpoint to roll back to in {paths.checkpoints}")
        cp = done[-1]
        if cp.created(paths.spec):
            raise OperationFailed(f"the last apply ({cp.dir.name}) created this deployment: there is no earlier "
                                  "configuration to return to (`deploykit uninstall` removes the deployment)")

        def current_desired() -> DesiredState:
            # After cp.restore() the spec on disk is the earlier one: its programs and address count.
            return build_desired(require_spec(paths.state_dir), paths, host)[0]

        def verify() -> None:
            if engine.nginx.probe_pid() is not None:
                engine.verify(current_desired())

        with reporter.step("rollback") as out:
            restored = restore_checkpoint(engine, cp, lambda changed: current_desired().programs_for(changed), verify)
            out["text"] = (f"{len(restored)} file(s) restored to before the {cp.note or 'apply'} "
                           f"of {cp.dir.name}; verified")
        reporter.always(f"ready: {current_desired().url}")


def run_uninstall(state_dir: Path, root: Path, quiet: bool, remove_certs: bool, remove_data: bool, yes: bool) -> None:
    """Remove every file in the record, and deploykit's own working state (checkpoints, which hold
    copies of those files, run state, nginx's temp files); nothing else: the operator's files,
    the notebooks (unless remove_data), the certificates (unless remove_certs) and the logs stay.
    """
    from deploykit.desired import notebook_dir
    from deploykit.record import read_record

    spec, paths, host = load_deployment(state_dir, root)
    reporter = Reporter(quiet)
    record = read_record(paths.record)
    if not yes and sys.stdin.isatty():
        click.confirm(f"Remove the {len(record['files'])} files deploykit wrote for {spec.deployment.domain}?",
                      abort=True)
    kept: list[str] = []
    removed = 0
    notebooks = Path(notebook_dir(spec, paths))
    with deployment_lock(paths.lock, on_wait=reporter.line):
        record = read_record(paths.record)
        run_stop(paths.state_dir, root, quiet)
        for link in record["links"]:
            removed += fsio.apply_remove(Path(link["path"]))
        for f in record["files"]:
            if f["kind"] == "cert" and not remove_certs:
                kept.append(f["path"])
                continue
            removed += fsio.apply_remove(Path(f["path"]))
        if paths.target != "local":
            # The system's supervisord and nginx keep running (they serve others too): make them
            # drop the programs and the site just removed.
            try:
                Engine(paths, host, reporter).resync(update=True, reload_nginx=True)
            except OperationFailed as exc:
                reporter.warn(str(exc))
        if remove_data:
            shutil.rmtree(notebooks, ignore_errors=True)
        for d in (paths.checkpoints, paths.nginx_temp, paths.jupyter_runtime_dir, paths.run_dir):
            shutil.rmtree(d, ignore_errors=True)
        # Directories deploykit made go when empty, innermost first; never the notebook directory.
        for d in sorted((Path(x["path"]) for x in record["dirs"]), key=lambda p: len(p.parts), reverse=True):
            if d not in (paths.state_dir, notebooks):
                _rmdir_if_empty(d)
    try:
        os.unlink(paths.lock)
    except FileNotFoundError:
        pass
    _rmdir_if_empty(paths.state_dir / "nginx")
    _rmdir_if_empty(paths.state_dir / "supervisor")
    _rmdir_if_empty(paths.state_dir)
    reporter.always(f"removed {removed} file(s)" + (f"; kept {len(kept)} certificate file(s) (--remove-certs)" if kept else ""))
    left = [str(d) for d in (paths.log_dir, None if remove_data else notebooks) if d is not None and d.exists()]
    if left:
        reporter.line("kept: " + ", ".join(left))


def _rmdir_if_empty(d: Path) -> None:
    try:
        d.rmdir()
    except OSError:
        pass
