"""`deploykit kernel`: kernels from other Python environments, and the default kernel's name.

add, remove and rename-default edit the spec and apply it at once through the same engine as
`reload` (checkpoint, atomic writes, verify, rollback on failure). Every input is checked before
the lock is taken: a bad path, a Python without ipykernel or a name clash exits 2 and changes
nothing.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import click

from deploykit import validate as v
from deploykit.cli import ABS_PATH, Checked, find_state_dir, run_guarded, state_dir_option
from deploykit.errors import BadInput


class _OnFirstUse:
    """deploykit.kernels, imported when a kernel command runs: it pulls in Jinja2 and
    cryptography, which `deploykit --help` must not pay for."""

    def __getattr__(self, name):
        from deploykit import kernels

        return getattr(kernels, name)


k = _OnFirstUse()

KERNEL_NAME = Checked(v.kernel_name, "kernel name")
DISPLAY_NAME = Checked(v.display_name, "display name")
ORDER = Checked(v.kernel_order, "order")


@click.group()
def kernel():
    """Kernels from other Python environments (venvs, conda envs), listed in Jupyter.

    \b
    Examples:
      deploykit kernel discover ~/projects
      deploykit kernel add --python ~/projects/survey/.venv/bin/python --name survey
      deploykit kernel add --python /opt/conda/envs/geo/bin/python --name geo \\
          --display-name "Geo (conda)" --order 1
      deploykit kernel rename-default --display-name "Python 3 (server)"
      deploykit kernel list
      deploykit kernel remove survey
    """


# -- applying a spec change ---------------------------------------------------------------------

def _load(state_dir, root: Path, for_apply: bool = True):
    from deploykit.provision import check_ports_set, load_deployment

    spec, paths, host = load_deployment(find_state_dir(state_dir), root)
    check_ports_set(spec, paths.state_dir)
    if for_apply and spec.deployment.mode == "hub":
        from deploykit.hub import check_hub_spec

        check_hub_spec(spec, paths)  # the same gate as reload: the apply below is one
    return spec, paths, host


def _apply(paths, host, quiet: bool, change, note: str, dry_run: bool) -> None:
    """Re-read the spec under the lock, apply change(spec) -> spec, write it and everything it
    implies through the engine (the spec file itself is part of the checkpointed apply)."""
    from deploykit.apply import Engine
    from deploykit.display import Reporter
    from deploykit.lock import deployment_lock
    from deploykit.plan import render_plan
    from deploykit.provision import build_desired, require_spec
    from deploykit.spec import dump_spec

    reporter = Reporter(quiet)
    engine = Engine(paths, host, reporter)
    if dry_run:
        new = change(require_spec(paths.state_dir))
        desired, _ = build_desired(new, paths, host, spec_text=dump_spec(new))
        click.echo(render_plan(engine.make_plan(desired)[1]), nl=False)
        return
    with deployment_lock(paths.lock, on_wait=reporter.line):
        # Another run may have changed the spec since it was checked: decide on the current one.
        new = change(require_spec(paths.state_dir))
        reporter.line(f"deploykit kernel {note}: {new.deployment.domain} in {paths.state_dir}")
        with reporter.step("render") as out:
            desired, _ = build_desired(new, paths, host, spec_text=dump_spec(new))
            desired, plan = engine.make_plan(desired)
            out["text"] = f"{len(desired.files)} files, {len(plan.changes)} to change"
        if plan.empty:
            reporter.line(render_plan(plan).rstrip())
        else:
            engine.apply(desired, plan, note=f"kernel {note}")
        _prune_kernel_dirs(new, paths)


def _prune_kernel_dirs(spec, paths) -> None:
    """Directories of kernels no longer in the spec, once apply has removed their files."""
    wanted = {e.path for e in k.build_kernel_dirs(spec, paths)}
    base = k.kernel_root(spec, paths) / "kernels"
    try:
        entries = list(base.iterdir())
    except OSError:
        return
    for d in entries:
        if d.is_dir() and not d.is_symlink() and d not in wanted:
            try:
                d.rmdir()  # only when empty: anything else in there is not ours to delete
            except OSError:
                pass


def _foreign(spec, paths, host) -> dict[str, str]:
    try:
        return k.foreign_kernels(k.probe_jupyter_kernels(spec, paths, host), spec, paths)
    except k.ProbeFailed as exc:
        click.echo(f"warning: {exc}; cannot check for clashes with kernels Jupyter already has", err=True)
        return {}


def _warn_if_unreachable(spec, paths, pythons: list[str]) -> None:
    """Hub mode: user servers run as their users, so both the kernelspecs and the interpreters
    must be reachable by others. Only warned: group permissions may still let them in."""
    if spec.deployment.mode != "hub":
        return
    if spec.hub.spawner == "docker":
        click.echo("warning: with the docker spawner, user servers run inside their image and do not "
                   "see this host's environments or kernelspecs", err=True)
        return
    root = k.kernel_root(spec, paths)
    blocked = k.unreachable_for_others(str(root), executable=False)
    if blocked:
        click.echo(f"warning: hub users cannot reach {blocked} (no o+x), so their servers will not see the "
                   f"kernels in {root}: `chmod o+x {blocked}`, or keep the deployment under a directory "
                   "everyone can enter", err=True)
    for python in pythons:
        blocked = k.unreachable_for_others(python)
        if blocked:
            click.echo(f"warning: hub users cannot reach {blocked} (no o+x), so {python} will not start "
                       f"for them: `chmod o+x {blocked}`, or build the environment somewhere everyone can "
                       "enter", err=True)


# -- commands -----------------------------------------------------------------------------------

@kernel.command()
@click.option("--python", "python_path", type=ABS_PATH, required=True,
              help="The environment's interpreter, e.g. ~/proj/.venv/bin/python or ENV/bin/python.")
@click.option("--name", type=KERNEL_NAME, required=True,
              help="Kernel name: lower-case letters, digits, '.', '_', '-' (stored in notebooks).")
@click.option("--display-name", type=DISPLAY_NAME, help="Name shown in Jupyter. Default: 'Python 3.X (ENV)'.")
@click.option("--order", type=ORDER, default=0,
              help="Place in Jupyter's lists, 1-99 (shown as an 'N. ' prefix). Default: by display name.")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@state_dir_option
@run_guarded
def add(state_dir, root, quiet, python_path, name, display_name, order, dry_run):
    """Offer the Python environment's IPython kernel in Jupyter (every user's, in hub mode).

    The environment needs ipykernel (ENV/bin/python -m pip install ipykernel).

    \b
    Example:
      deploykit kernel add --python /srv/envs/survey/bin/python --name survey --display-name "Survey 2024"
    """
    spec, paths, host = _load(state_dir, root)
    k.check_kernel_name(spec, name, {})
    facts = k.check_kernel_python(python_path)
    name = k.check_kernel_name(spec, name, _foreign(spec, paths, host))
    display_name = display_name or k.suggest_display_name(facts, k.env_label(Path(facts.prefix)), name)
    _warn_if_unreachable(spec, paths, [python_path])

    def change(current):
        k.check_kernel_name(current, name, {})
        return k.with_kernel(current, name, python_path, display_name, order)

    _apply(paths, host, quiet, change, f"add {name}", dry_run)
    if not dry_run:
        click.echo(f"kernel {name!r} ({k.shown_names(change(spec))[name]}): {python_path} "
                   f"(Python {facts.version}, ipykernel {facts.ipykernel})")


@kernel.command()
@click.argument("name", type=KERNEL_NAME)
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@state_dir_option
@run_guarded
def remove(state_dir, root, quiet, name, dry_run):
    """Stop offering a kernel deploykit added (the environment itself is left alone).

    \b
    Example:
      deploykit kernel remove survey
    """
    spec, paths, host = _load(state_dir, root)

    def change(current):
        if name == k.DEFAULT_KERNEL:
            raise BadInput("NAME", name, "is the deployment's own kernel; to undo a rename use "
                                         "`deploykit kernel rename-default --reset`")
        if not any(kk.name == name for kk in current.kernels):
            names = ", ".join(kk.name for kk in current.kernels) or "none"
            raise BadInput("NAME", name, f"not a kernel of this deployment (deploykit's kernels: {names})")
        return k.without_kernel(current, name)

    change(spec)
    _apply(paths, host, quiet, change, f"remove {name}", dry_run)
    if not dry_run:
        click.echo(f"kernel {name!r} removed")


@kernel.command("rename-default")
@click.option("--display-name", type=DISPLAY_NAME, help="Name shown for the deployment's own Python kernel.")
@click.option("--reset", is_flag=True, help="Back to Jupyter's own name for it.")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@state_dir_option
@run_guarded
def rename_default(state_dir, root, quiet, display_name, reset, dry_run):
    """Give the deployment's own kernel (python3, "Python 3 (ipykernel)") a clearer name.

    \b
    Example:
      deploykit kernel rename-default --display-name "Python 3 (server, shared)"
    """
    if bool(display_name) == bool(reset):
        raise BadInput("--display-name", display_name or "", "give either --display-name TEXT or --reset")
    spec, paths, host = _load(state_dir, root)
    value = "" if reset else display_name

    def change(current):
        return current.with_values({"deployment": {"default_kernel_display_name": value}})

    _apply(paths, host, quiet, change, "rename-default", dry_run)
    if not dry_run:
        click.echo(f"default kernel python3: {value or 'Jupyter’s own name'}")


@kernel.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: the kernels Jupyter offers, and whose.")
@state_dir_option
@run_guarded
def list_(state_dir, root, quiet, as_json):
    """The kernels the deployment's Jupyter offers, in the order its launcher shows them.

    \b
    Example:
      deploykit kernel list --json
    """
    spec, paths, host = _load(state_dir, root, for_apply=False)
    shown = k.shown_names(spec)
    ours = k.kernel_root(spec, paths) / "kernels"
    error = None
    try:
        seen = k.probe_jupyter_kernels(spec, paths, host)
    except k.ProbeFailed as exc:
        seen, error = {}, str(exc)
    rows = {}
    for kk in spec.kernels:
        info = seen.get(kk.name)
        rows[kk.name] = {
            "name": kk.name, "display_name": kk.display_name, "shown_as": shown[kk.name],
            "python": kk.python, "order": kk.order, "source": "deploykit",
            "resource_dir": info["resource_dir"] if info else str(ours / kk.name),
            "seen_by_jupyter": bool(info) if not error else None,
            "python_ok": os.access(kk.python, os.X_OK),
        }
    for name, info in seen.items():
        if name in rows:
            continue
        argv = info["spec"].get("argv") or [""]
        managed = Path(info["resource_dir"]).parent == ours
        rows[name] = {
            "name": name, "display_name": info["spec"].get("display_name", name),
            "shown_as": info["spec"].get("display_name", name),
            "python": argv[0] if argv[0] != "python" else "(the Jupyter environment's)",
            "order": 0, "source": "deploykit" if managed else "jupyter environment",
            "resource_dir": info["resource_dir"], "seen_by_jupyter": True, "python_ok": None,
        }
    ordered = [rows[n] for n, _ in k.ui_order([(r["name"], r["shown_as"]) for r in rows.values()])]
    if as_json:
        click.echo(json.dumps({"kernels": ordered, "kernel_dir": str(ours),
                               "jupyter_path": k.kernel_search_path(spec, paths), "error": error}, indent=1))
        return
    if error:
        click.echo(f"warning: {error}; showing the spec's kernels only", err=True)
    width = max([len(r["shown_as"]) for r in ordered] + [12])
    for r in ordered:
        notes = []
        if r["source"] != "deploykit":
            notes.append(f"from {r['resource_dir']}")
        if r["seen_by_jupyter"] is False:
            notes.append("not yet seen by Jupyter: run `deploykit reload`")
        if r["python_ok"] is False:
            notes.append("interpreter missing")
        click.echo(f"{r['name']:<20} {r['shown_as']:<{width}}  {r['python']}"
                   + (f"  ({'; '.join(notes)})" if notes else ""))


@kernel.command()
@click.argument("dirs", nargs=-1, type=click.Path(exists=True, file_okay=False, resolve_path=True))
@click.option("--depth", type=click.IntRange(0, 6), default=3, show_default=True,
              help="How many directory levels below each DIR to look for venvs.")
@click.option("--add-all", "--yes", "-y", "add_all", is_flag=True,
              help="Add every environment found that has ipykernel, with the suggested names.")
@state_dir_option
@run_guarded
def discover(state_dir, root, quiet, dirs, depth, add_all):
    """Find conda environments and venvs under DIRs that can run a kernel, and offer to add them.

    Looks in conda's envs directories, ~/.conda/environments.txt and `conda env list`, plus venvs
    at most --depth levels below each DIR. Prints the `deploykit kernel add` commands; adds them
    with --add-all, or asks for each one on a terminal.

    \b
    Example:
      deploykit kernel discover ~/projects /srv/envs
    """
    from deploykit.provision import read_spec

    sd = find_state_dir(state_dir)
    spec = read_spec(sd)
    if add_all and spec is None:
        raise BadInput("--state-dir", str(sd), "no deployment there (no deploykit.toml); run `deploykit provision` first")
    home = Path(os.path.expanduser("~"))
    found = k.find_environments([Path(d) for d in dirs], home, dict(os.environ), depth)
    taken = {k.DEFAULT_KERNEL}
    have: dict[str, str] = {}
    paths = host = None
    if spec is not None:
        spec, paths, host = _load(state_dir, root, for_apply=add_all or sys.stdin.isatty())
        taken |= {kk.name for kk in spec.kernels} | set(_foreign(spec, paths, host))
        have = {os.path.realpath(Path(kk.python).parent.parent): kk.name for kk in spec.kernels}
        from deploykit.desired import jupyter_python

        have.setdefault(os.path.realpath(Path(jupyter_python(spec, host)).parent.parent), k.DEFAULT_KERNEL)
    fresh = [f for f in found if os.path.realpath(f.prefix) not in have]
    probes = k.probe_many([f.python for f in fresh])
    ready, lacking = [], []
    for f in fresh:
        facts = probes[f.python]
        if isinstance(facts, str):
            lacking.append((f, f"not usable: {facts}"))
        elif facts.ipykernel is None:
            lacking.append((f, f"no ipykernel; add it with: {shlex.quote(f.python)} -m pip install ipykernel"))
        else:
            name = k.suggest_name(f.label, taken)
            taken.add(name)
            ready.append((f, facts, name, k.suggest_display_name(facts, f.label, name)))
    for f in found:
        if os.path.realpath(f.prefix) in have:
            click.echo(f"already offered: {f.prefix} (kernel {have[os.path.realpath(f.prefix)]})")
    for f, why in lacking:
        click.echo(f"skipped: {f.prefix} ({f.source}): {why}")
    if not ready:
        click.echo("no new environment with ipykernel found" + ("" if dirs else " (give directories to look for venvs in)"))
        return
    given_sd = state_dir or os.environ.get("DEPLOYKIT_STATE_DIR")
    click.echo(f"found {len(ready)} environment(s) with ipykernel:")
    for f, facts, name, display in ready:
        click.echo(f"  {f.prefix} ({f.source}, Python {facts.version}, ipykernel {facts.ipykernel})")
        click.echo(f"    {k.add_command(f.python, name, display, given_sd)}")
    if add_all:
        chosen = ready
    elif spec is not None and sys.stdin.isatty() and sys.stdout.isatty():
        chosen = [r for r in ready if click.confirm(f"add {r[0].prefix} as {r[2]!r} ({r[3]})?", default=True)]
    else:
        click.echo("run the commands above to add them, or `deploykit kernel discover --add-all`")
        return
    if not chosen:
        return
    _warn_if_unreachable(spec, paths, [f.python for f, _, _, _ in chosen])

    def change(current):
        for f, _, name, display in chosen:
            k.check_kernel_name(current, name, {})
            current = k.with_kernel(current, name, f.python, display)
        return current

    _apply(paths, host, quiet, change, "discover", dry_run=False)
    click.echo("added: " + ", ".join(name for _, _, name, _ in chosen))
