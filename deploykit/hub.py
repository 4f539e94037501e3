"""JupyterHub mode. Placeholder until the hub issue lands."""

from deploykit.errors import BadInput


def check_hub_input(spec, opts, paths):
    raise BadInput("--mode", "hub", "not implemented yet; use --mode notebook")
