"""`deploykit export`: carry a deployment's setup to another platform (Zero to JupyterHub).

Registered by deploykit.cli. Reads the spec and the secrets the values need (a manual or
self-signed certificate and key, the shared passwords); writes nothing but the values file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from deploykit.cli import ABS_PATH, find_state_dir, read_password_stream, run_guarded, state_dir_option
from deploykit.errors import BadInput


@click.group()
def export():
    """Carry this deployment's setup elsewhere (Zero to JupyterHub on Kubernetes)."""


@export.command("z2jh")
@click.option("--output", "-o", type=ABS_PATH,
              help="Write the values here (0600 when they hold a key or password). Default: standard output.")
@click.option("--authenticator", type=click.Choice(["native", "shared-password"]),
              help="How users log in to the cluster's hub; needed for PAM and Notebook deployments, "
                   "whose logins cannot be carried over.")
@click.option("--shared-password-stdin", is_flag=True,
              help="shared-password: read the password users log in with from standard input "
                   "(default: the hub's own, when it has one).")
@state_dir_option
@run_guarded
def z2jh(state_dir, root, quiet, output, authenticator, shared_password_stdin):
    """Print Helm values for the Zero to JupyterHub chart equivalent to this deployment.

    Settings with no equivalent in the chart are listed in comments at the top of the file;
    settings that could only be carried over wrongly are refused (exit 2).

    \b
    Examples:
      deploykit export z2jh --output values.yaml
      deploykit export z2jh --authenticator native --output values.yaml
      helm upgrade --install jupyterhub jupyterhub --repo https://hub.jupyter.org/helm-chart/ \\
          --values values.yaml
    """
    from deploykit import fsio
    from deploykit.export import build_z2jh_values, holds_secrets, render_z2jh_values
    from deploykit.paths import paths_for
    from deploykit.provision import require_spec

    state = find_state_dir(state_dir)
    spec = require_spec(state)
    paths = paths_for(spec.deployment.target, state, root)
    if output is not None and (Path(output).is_dir() or not Path(output).parent.is_dir()):
        raise BadInput("--output", output, "expected a file in an existing directory")
    secrets, generated = read_export_secrets(spec, paths, authenticator, shared_password_stdin)
    values, notes = build_z2jh_values(spec, secrets, authenticator)
    text = render_z2jh_values(values, notes, spec.deployment.domain)
    private = holds_secrets(values)
    if output is None:
        if private and sys.stdout.isatty():
            raise BadInput("--output", "", "the values hold secrets (a private key or passwords): write them to "
                                           "a private file with --output FILE, or pipe them")
        click.echo(text, nl=False)
    else:
        fsio.apply_write_atomic(Path(output), text.encode(), mode=0o600 if private else 0o644)
    if not quiet:
        dropped = sum(1 for n in notes if not n.carried)
        where = f"wrote {output}" + (" (0600: it holds secrets)" if private else "") if output else "values printed"
        click.echo(f"deploykit export z2jh: {where}; {dropped} setting(s) not carried over, "
                   "listed in its opening comments", err=True)
        if generated:
            click.echo("the shared-password authenticator needs an admin password and this deployment had none: "
                       "one was generated, in hub.config.SharedPasswordAuthenticator.admin_password", err=True)


def read_export_secrets(spec, paths, authenticator: str | None, shared_password_stdin: bool):
    """The certificate, key and passwords the values carry, and whether an admin password was made.

    Looks only: nothing on disk changes.
    """
    from deploykit import hub
    from deploykit.export import ExportSecrets
    from deploykit.materials import read_bytes, self_signed_paths

    cert = key = ""
    if spec.tls.mode == "manual":
        from deploykit.manualcert import check_manual_cert

        chain, key_pem = check_manual_cert(spec)
        cert, key = chain.decode(), key_pem.decode()
    elif spec.tls.mode == "self-signed":
        cert_path, key_path = self_signed_paths(paths)
        cert_pem, key_pem = read_bytes(cert_path), read_bytes(key_path)
        if cert_pem is None or key_pem is None:
            raise BadInput("tls.mode", "self-signed", f"no certificate at {cert_path} yet: run `deploykit "
                                                      "provision` first, or choose letsencrypt or manual")
        cert, key = cert_pem.decode(), key_pem.decode()

    is_hub = spec.deployment.mode == "hub"
    chosen = authenticator or (spec.hub.authenticator if is_hub else None)
    user_password = admin_password = ""
    generated = False
    if shared_password_stdin and chosen != "shared-password":
        raise BadInput("--shared-password-stdin", "", "only with the shared-password authenticator")
    if chosen == "shared-password":
        if shared_password_stdin:
            user_password = read_password_stream(sys.stdin, "--shared-password-stdin")
            if len(user_password) < hub.SHARED_PASSWORD_MIN or any(c in user_password for c in "\x00\r\n"):
                raise BadInput("--shared-password-stdin", f"({len(user_password)} characters)",
                               f"expected one line of at least {hub.SHARED_PASSWORD_MIN} characters")
        elif is_hub and spec.hub.authenticator == "shared-password":
            user_password = _read_secret(hub.shared_password_path(paths))
        if is_hub and spec.hub.admins:
            stored = hub.admin_password_path(paths)
            if spec.hub.authenticator == "shared-password" and stored.exists():
                admin_password = _read_secret(stored)
            else:
                import secrets

                admin_password, generated = secrets.token_urlsafe(hub.ADMIN_PASSWORD_BYTES), True
    return ExportSecrets(cert, key, user_password, admin_password), generated


def _read_secret(path: Path) -> str:
    try:
        return path.read_text().rstrip("\n")
    except FileNotFoundError:
        raise BadInput("--state-dir", str(path.parent.parent), f"{path} is missing: run `deploykit provision` "
                                                               "first, or pass --shared-password-stdin") from None
    except PermissionError:
        raise BadInput("--state-dir", str(path.parent.parent), f"cannot read {path}: run as the user who "
                                                               "provisioned the deployment") from None
