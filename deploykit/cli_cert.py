"""`deploykit cert`: the certificate's health, renewal, and the hook certbot runs after a renewal."""

from __future__ import annotations

import json
import sys

import click

from deploykit.cli import find_state_dir, run_guarded, state_dir_option


@click.group()
def cert():
    """The deployment's certificate: health, renewal (Let's Encrypt), and certbot's deploy hook.

    \b
    Examples:
      deploykit cert status
      deploykit cert renew --force
    """


@cert.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object: subject, sans, issuer, not_after, "
                                                      "days_left, renewal, served, ...")
@state_dir_option
@run_guarded
def status(state_dir, root, quiet, as_json):
    """Show the certificate nginx is configured with, its expiry and whether renewal is configured.

    Exit 0 when the certificate is readable and not expired, 1 otherwise. Warns (on stderr) when
    fewer than 14 days are left.

    \b
    Example:
      deploykit cert status --json
    """
    from deploykit.provision import load_deployment

    from deploykit.certstatus import build_cert_status, render_cert_status

    spec, paths, _ = load_deployment(find_state_dir(state_dir), root)
    s = build_cert_status(spec, paths)
    click.echo(json.dumps(s, indent=1) if as_json else render_cert_status(s))
    if s.get("warning"):
        click.echo(f"warning: certificate {s['warning']}: run `deploykit cert renew`", err=True)
    sys.exit(0 if s["ok"] else 1)


@cert.command()
@click.option("--force", is_flag=True, help="Renew now even if the certificate is not due (certbot --force-renewal).")
@state_dir_option
@run_guarded
def renew(state_dir, root, quiet, force):
    """Renew the Let's Encrypt certificate when due (or now, with --force), then make nginx serve it.

    certbot decides whether it is due (30 days before expiry). The deploy hook validates the
    configuration and reloads nginx gracefully, so no request fails during the switch. If no
    certificate was issued yet, this does what `provision` does: preflight, issue, switch.

    \b
    Example:
      deploykit cert renew --force
    """
    from deploykit.acme import run_cert_renew

    run_cert_renew(find_state_dir(state_dir), root, quiet, force)


@cert.command("deploy-hook")
@state_dir_option
@run_guarded
def deploy_hook(state_dir, root, quiet):
    """Run by certbot after it renewed the certificate: nginx -t, then a graceful reload, only when
    nginx serves another certificate than certbot's current one. Logged to LOG_DIR/certbot-deploy-hook.log.
    """
    from deploykit.acme import run_hook

    result = run_hook(find_state_dir(state_dir), root)
    if not quiet:
        click.echo(result)
