"""deploykit's command line. Commands stay thin: they parse and check input, then call the library.

Exit codes: 0 success, 1 an operation failed (after rollback), 2 bad input or usage. Heavy
modules are imported inside the commands so that `deploykit --help` starts fast.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from deploykit import __version__
from deploykit import validate as v
from deploykit.errors import BadInput, DeploykitError

EPILOG_PROVISION = """\b
Examples:
  deploykit provision --domain jupyter.example.com --target local
  echo "$PASSWORD" | deploykit provision --domain jupyter.test --password-stdin --base-url /jupyter/
"""


class Checked(click.ParamType):
    """A Click type backed by one of deploykit.validate's checks: BadParameter names the value."""

    def __init__(self, check, name: str):
        self.check = check
        self.name = name

    def convert(self, value, param, ctx):
        try:
            return self.check(value)
        except v.Invalid as exc:
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "...'"
            self.fail(f"{shown}: {exc}", param, ctx)


DOMAIN = Checked(v.domain, "domain")
PORT = Checked(v.port, "port")
BASE_URL = Checked(v.base_url, "base URL")
USER = Checked(v.username, "user")
EMAIL = Checked(v.email, "email")
SIZE = Checked(v.size, "size")
SECONDS = Checked(v.duration, "seconds")
RATE = Checked(v.rate, "rate")
URL = Checked(v.url, "url")
MEMORY = Checked(v.memory, "memory")
CPUS = Checked(v.cpu, "cpus")


class AbsPath(click.ParamType):
    """A path made absolute against the current directory, then checked like every other path."""

    name = "path"

    def convert(self, value, param, ctx):
        text = str(value)
        if text and not text.startswith("/") and "\x00" not in text:
            text = os.path.abspath(text)
        try:
            return v.abs_path(text)
        except v.Invalid as exc:
            self.fail(f"{str(value)!r}: {exc}", param, ctx)


ABS_PATH = AbsPath()


class InputFile(click.File):
    """click.File for reading, but a name with control characters is a bad value, not a crash (NUL)."""

    def __init__(self):
        super().__init__("r")

    def convert(self, value, param, ctx):
        # Only opened, never written into a config: any printable name will do.
        if isinstance(value, str) and not value.isprintable():
            self.fail(f"{value!r}: control or invisible characters are not allowed in a file name", param, ctx)
        return super().convert(value, param, ctx)


def state_dir_option(f):
    @click.option("--state-dir", type=ABS_PATH, envvar="DEPLOYKIT_STATE_DIR", show_envvar=True,
                  help="The deployment's directory (its spec is DIR/deploykit.toml). Default: "
                       "$XDG_STATE_HOME/deploykit for the local target, /var/lib/deploykit for system.")
    @click.option("--root", type=ABS_PATH, default="/", show_default=True, hidden=False,
                  help="System target only: lay the whole /etc layout under this directory (tests).")
    @click.option("--quiet", "-q", is_flag=True, help="Print only errors and the result.")
    @functools.wraps(f)
    def wrapper(*args, state_dir, root, quiet, **kwargs):
        if state_dir is None and Path(root) != Path("/"):
            # The whole system layout goes under --root, the state dir with it: never the host's.
            state_dir = str(Path(root) / "var/lib/deploykit")
        return f(*args, state_dir=state_dir, root=Path(root), quiet=quiet, **kwargs)

    return wrapper


def default_state_dir(target: str) -> Path:
    if target == "system":
        return Path("/var/lib/deploykit")
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "deploykit"


def find_state_dir(given: str | None) -> Path:
    """For commands that read an existing deployment: the given dir, else the usual places."""
    if given:
        return Path(given)
    for target in ("local", "system") if os.geteuid() != 0 else ("system", "local"):
        candidate = default_state_dir(target)
        if (candidate / "deploykit.toml").is_file():
            return candidate
    return default_state_dir("system" if os.geteuid() == 0 else "local")


def run_guarded(fn):
    """Turn deploykit's errors into one-line messages and their exit codes."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DeploykitError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="deploykit")
def cli():
    """Jupyter Notebook or JupyterHub behind nginx (TLS, WebSockets) under supervisor.

    \b
    Quick start (everything under one state dir, ports 8080/8443):
      deploykit provision --domain jupyter.test --target local
    Then edit DIR/deploykit.toml and run `deploykit plan` and `deploykit reload`.
    """


# -- provision ------------------------------------------------------------------------------

@cli.command(epilog=EPILOG_PROVISION)
@click.option("--domain", type=DOMAIN, help="DNS name (or IP) Jupyter is served at. Required the first time.")
@click.option("--mode", type=click.Choice(["notebook", "hub"]), help="Single-user Notebook (default) or JupyterHub.")
@click.option("--target", type=click.Choice(["local", "system"]),
              help="local: all under the state dir; system: Debian/Ubuntu layout. Default: system as root, else local.")
@click.option("--http-port", type=PORT, help="Plain HTTP port (default 8080 local, 80 system).")
@click.option("--https-port", type=PORT, help="HTTPS port (default 8443 local, 443 system).")
@click.option("--tls", "tls_mode", type=click.Choice(["self-signed", "letsencrypt", "manual", "off"]),
              help="Where the certificate comes from (default self-signed; off only for local names).")
@click.option("--email", type=EMAIL, help="letsencrypt: the ACME account's contact address.")
@click.option("--staging", is_flag=True, default=None, help="letsencrypt: use the staging server.")
@click.option("--acme-server", type=URL, help="letsencrypt: another ACME directory URL.")
@click.option("--acme-ca-bundle", type=ABS_PATH, help="letsencrypt: CA bundle that signs the ACME server's TLS.")
@click.option("--cert", type=ABS_PATH, help="manual: certificate chain (PEM).")
@click.option("--key", type=ABS_PATH, help="manual: private key (PEM).")
@click.option("--base-url", type=BASE_URL, help="URL prefix, e.g. /jupyter/ (default /).")
@click.option("--password-stdin", is_flag=True, help="Read the Notebook password from standard input.")
@click.option("--password-file", type=InputFile(), help="Read the Notebook password from this file.")
@click.option("--notebook-dir", type=ABS_PATH, help="Directory Jupyter serves (default STATE_DIR/notebooks).")
@click.option("--upload-limit", type=SIZE, help="Largest upload, nginx size syntax (default 1g).")
@click.option("--login-rate-limit", type=RATE, help="Login attempts per client, e.g. 10r/m.")
@click.option("--user", type=USER, help="System target: the service user (default jupyter).")
@click.option("--python", "python_path", type=ABS_PATH, help="Python of an existing Jupyter environment.")
@click.option("--authenticator", type=click.Choice(["pam", "native", "shared-password"]), help="Hub: how users log in.")
@click.option("--admin", "admins", type=USER, multiple=True, help="Hub: an admin user (repeatable).")
@click.option("--allow", "allowed", type=USER, multiple=True, help="Hub: a user allowed to log in (repeatable).")
@click.option("--allow-all", is_flag=True, default=None, help="Hub: allow every user the authenticator accepts.")
@click.option("--idle-timeout", type=SECONDS, help="Hub: cull servers idle this many seconds (0 = never).")
@click.option("--default-url", type=click.Choice(["/lab", "/tree"]), help="Page opened after login.")
@click.option("--shared-password-stdin", is_flag=True, help="Hub, shared-password: read it from stdin.")
@click.option("--spawner", type=click.Choice(["localprocess", "systemd", "docker"]), help="Hub: how user servers start.")
@click.option("--mem-limit", type=MEMORY, help="Hub: per-user memory limit, e.g. 2G.")
@click.option("--cpu-limit", type=CPUS, help="Hub: per-user CPU limit, e.g. 1.5.")
@click.option("--install-missing", is_flag=True, help="System target: install nginx/supervisor/certbot with apt.")
@click.option("--dry-run", is_flag=True, help="Show the plan (diff and daemon actions); change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@state_dir_option
@run_guarded
def provision(state_dir, root, quiet, **opts):
    """Set up (or update) a deployment from flags, then start or reload it.

    Flags are merged into the deployment's spec (STATE_DIR/deploykit.toml); flags not given
    keep their value from an existing spec.
    """
    from deploykit.provision import run_provision

    run_provision(state_dir=state_dir, root=root, quiet=quiet, opts=opts)


# -- reload / plan ----------------------------------------------------------------------------

@cli.command()
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@state_dir_option
@run_guarded
def reload(state_dir, root, quiet, dry_run):
    """Re-read the spec, re-render, validate, and reload only what changed.

    \b
    Example:
      $EDITOR ~/.local/state/deploykit/deploykit.toml && deploykit reload
    """
    from deploykit.provision import run_reload

    run_reload(find_state_dir(state_dir), root, quiet, dry_run=dry_run)


@cli.command()
@state_dir_option
@run_guarded
def plan(state_dir, root, quiet):
    """Show what `reload` would change (a unified diff and the daemon actions); change nothing.

    \b
    Example:
      deploykit plan --state-dir /srv/deploykit
    """
    from deploykit.provision import run_reload

    run_reload(find_state_dir(state_dir), root, quiet, dry_run=True)


# -- status / stop --------------------------------------------------------------------------

@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object: programs, nginx, certificate, url, healthy.")
@state_dir_option
@run_guarded
def status(state_dir, root, quiet, as_json):
    """Show programs, nginx, the certificate and whether HTTPS through nginx works.

    Exit 0 when healthy, 1 otherwise.

    \b
    Example:
      deploykit status --json
    """
    from deploykit.status import run_status

    sys.exit(run_status(find_state_dir(state_dir), root, as_json))


@cli.command()
@state_dir_option
@run_guarded
def stop(state_dir, root, quiet):
    """Stop everything this deployment started (local target: supervisord, its programs, nginx).

    \b
    Example:
      deploykit stop
    """
    from deploykit.provision import run_stop

    run_stop(find_state_dir(state_dir), root, quiet)


# -- passwords -----------------------------------------------------------------------------

@cli.command("hash-password")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--verify", "verify_hash", metavar="HASH", help="Exit 0 if the password matches HASH, else 1.")
@run_guarded
def hash_password(from_stdin, verify_hash):
    """Print a hash for PasswordIdentityProvider.hashed_password (argon2), or verify one.

    \b
    Examples:
      deploykit hash-password
      printf %s "$PW" | deploykit hash-password --stdin --verify 'argon2:$argon2id$...'
    """
    from deploykit import passwords

    if from_stdin:
        password = read_password_stream(sys.stdin, "--stdin")
    elif sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=verify_hash is None)
    else:
        raise BadInput("password", "", "no TTY to ask on; pass --stdin and pipe the password in")
    if verify_hash is not None:
        sys.exit(0 if passwords.verify_password(verify_hash, password) else 1)
    check_password(password, "password")
    click.echo(passwords.hash_password(password))


def read_password_stream(stream, where: str) -> str:
    text = stream.read()
    # One trailing newline is what `echo` adds; anything else is part of the password.
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    return text


def check_password(password: str, where: str) -> str:
    from deploykit.passwords import MIN_LENGTH

    if len(password) < MIN_LENGTH:
        raise BadInput(where, "(hidden)", f"too short; expected at least {MIN_LENGTH} characters")
    if "\x00" in password or "\n" in password:
        raise BadInput(where, "(hidden)", "contains a newline or NUL; expected one line")
    return password


# -- checkpoints and the record ---------------------------------------------------------------

@cli.command()
@state_dir_option
@run_guarded
def rollback(state_dir, root, quiet):
    """Return to the configuration before the last successful apply.

    \b
    Example:
      deploykit rollback
    """
    from deploykit.provision import run_rollback

    run_rollback(find_state_dir(state_dir), root, quiet)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@state_dir_option
@run_guarded
def files(state_dir, root, quiet, as_json):
    """List every file deploykit wrote for this deployment (to see, back up or remove them).

    \b
    Example:
      deploykit files | awk '{print $NF}' | tar czf deploykit-files.tgz -T -
    """
    from deploykit.record import read_record

    sd = find_state_dir(state_dir)
    record = read_record(sd / "files.json")
    if not record["files"]:
        raise BadInput("--state-dir", str(sd), "no deployment recorded there (no files.json)")
    if as_json:
        click.echo(json.dumps(record, indent=1))
        return
    for f in record["files"]:
        click.echo(f"{f['mode']} {f['kind']:<12} {f['path']}")
    for s in record["links"]:
        click.echo(f"link {'':<12} {s['path']} -> {s['target']}")


@cli.command()
@click.option("--remove-certs", is_flag=True, help="Also remove certificates and keys.")
@click.option("--remove-data", is_flag=True, help="Also remove the notebook directory (users' work!).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@state_dir_option
@run_guarded
def uninstall(state_dir, root, quiet, remove_certs, remove_data, yes):
    """Stop the deployment and remove every file in its record (certificates and data stay).

    \b
    Example:
      deploykit uninstall --yes
    """
    from deploykit.provision import run_uninstall

    run_uninstall(find_state_dir(state_dir), root, quiet, remove_certs, remove_data, yes)


def _register_optional_commands() -> None:
    """Command groups that live in their own modules (cert, kernel, export, doctor)."""
    import importlib

    for module, name in (("deploykit.cli_cert", "cert"), ("deploykit.cli_kernel", "kernel"),
                         ("deploykit.cli_export", "export"), ("deploykit.cli_doctor", "doctor")):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        cli.add_command(getattr(mod, name))


_register_optional_commands()


def one_line(text: str) -> str:
    """Click quotes some values as given (file names): escape anything that would break the line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def main() -> None:
    # Everything deploykit creates is private unless a file says otherwise (0600/0700).
    os.umask(0o077)
    try:
        code = cli.main(prog_name="deploykit", standalone_mode=False)
    except click.UsageError as exc:
        # One line that names the bad value and what is allowed; the usage text is one --help away.
        where = f" (see: {exc.ctx.command_path} --help)" if exc.ctx else ""
        click.echo(f"Error: {one_line(exc.format_message())}{where}", err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
