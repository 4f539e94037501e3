"""`deploykit doctor`: check a deployment and its host for what commonly breaks Jupyter behind a proxy."""

from __future__ import annotations

import sys

import click

from deploykit.cli import find_state_dir, run_guarded, state_dir_option


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object: healthy, findings, and every check.")
@state_dir_option
@run_guarded
def doctor(state_dir, root, quiet, as_json):
    """Check the deployment and the host; say how to fix each finding.

    Checks supervisord and its programs, nginx, ports taken by other processes, files that no
    longer match the spec, secret file modes, the certificate, HTTPS through nginx, Host/Origin
    handling, WebSocket upgrades reaching Jupyter, DNS, the clock and free disk space.
    Exit 0 when there are no findings, 1 otherwise. Changes nothing.

    \b
    Example:
      deploykit doctor --json
    """
    from deploykit.doctor import run_doctor

    sys.exit(run_doctor(find_state_dir(state_dir), root, as_json))
