"""JupyterLab's and Notebook 7's static bundles, served by nginx straight from disk.

Both front ends ship megabytes of content-hashed JavaScript that Jupyter serves without a
login from `{base_url}static/lab/` (the JupyterLab application directory's `static/`) and
`{base_url}static/notebook/` (the notebook package's `static/`). nginx serves the same files
many times faster than Jupyter's single thread; anything not on disk still goes to Jupyter.

probe_static_dirs looks at the Jupyter environment (at the edge: it runs that environment's
Python); build_static_locations is pure and turns the facts into nginx locations.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
from pathlib import Path

from deploykit import validate as v

# Runs in the Jupyter environment's Python. It follows jupyterlab.commands.get_app_dir without
# importing jupyterlab (that import takes over a second, on every plan and reload).
_PROBE = r"""
import json, os, site, sys
from importlib.util import find_spec
from os.path import dirname, exists, join
from pathlib import Path

def package_dir(name):
    try:
        spec = find_spec(name)
    except (ImportError, ValueError):
        return None
    locations = spec and spec.submodule_search_locations
    return str(locations[0]) if locations else None

here = package_dir("jupyterlab")
app_dir = None
if here:
    if os.environ.get("JUPYTERLAB_DIR"):
        app_dir = os.environ["JUPYTERLAB_DIR"]
    else:
        app_dir = join(sys.prefix, "share", "jupyter", "lab")
        userbase = site.getuserbase()
        if userbase and here.startswith(userbase) and not app_dir.startswith(userbase):
            app_dir = join(userbase, "share", "jupyter", "lab")
        elif sys.prefix.startswith("/usr") and not exists(app_dir) and exists("/usr/local/share/jupyter/lab"):
            app_dir = "/usr/local/share/jupyter/lab"
        elif not exists(app_dir):
            maybe = join(dirname(dirname(dirname(dirname(here)))), "share", "jupyter", "lab")
            if exists(maybe):
                app_dir = maybe
    app_dir = str(Path(app_dir).resolve())
notebook = package_dir("notebook")
print(json.dumps({"lab": join(app_dir, "static") if app_dir else None,
                  "notebook": str(Path(notebook, "static").resolve()) if notebook else None}))
"""

# What each front end needs on disk before nginx may answer for it.
_MARKERS = {"lab": "index.html", "notebook": "third-party-licenses.json"}


@dataclasses.dataclass(frozen=True)
class StaticDir:
    """One directory of bundles: `lab` or `notebook` (the URL segment after static/)."""

    name: str
    root: str
    gzip_static: bool = False     # .gz copies lie next to the files


def _world_readable(root: Path, sample: Path) -> bool:
    """Whether a worker running as another user (www-data) can read files under root."""
    try:
        if not (sample.stat().st_mode & stat.S_IROTH and root.stat().st_mode & stat.S_IROTH):
            return False
        for d in [root, *root.parents]:
            if not d.stat().st_mode & stat.S_IXOTH:
                return False
    except OSError:
        return False
    return True


def _usable(name: str, root: str | None, world_readable: bool) -> StaticDir | None:
    if not root:
        return None
    try:
        checked = v.abs_path(root)     # the path lands in nginx's config
    except v.Invalid:
        return None
    path = Path(checked)
    marker = path / _MARKERS[name]
    if not marker.is_file():
        return None
    if world_readable and not _world_readable(path, marker):
        return None
    try:
        gz = any(entry.name.endswith(".js.gz") for entry in os.scandir(path))
    except OSError:
        return None
    return StaticDir(name, checked, gz)


def probe_static_dirs(python: str, world_readable: bool = False, timeout: float = 20) -> tuple[StaticDir, ...]:
    """The static directories the Jupyter environment at `python` serves, as far as nginx can use them.

    world_readable: nginx's workers run as another user (the system target), so only directories
    everyone may read qualify. Anything unexpected means "none": Jupyter keeps serving them.
    """
    try:
        res = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
        found = json.loads(res.stdout) if res.returncode == 0 else {}
    except (OSError, subprocess.SubprocessError, ValueError):
        found = {}
    dirs = (_usable(name, found.get(name), world_readable) for name in ("lab", "notebook"))
    return tuple(d for d in dirs if d is not None)


def _regex_literal(text: str) -> str:
    # validate.base_url allows letters, digits, / . _ ~ -: only '.' means something in a regex.
    return text.replace(".", r"\.")


def build_static_locations(base_url: str, mode: str, dirs: tuple[StaticDir, ...]) -> list[dict]:
    """nginx regex locations for the bundles: Notebook mode's server, or every user's server in Hub mode.

    Each captures the file's path as $deploykit_asset. nginx matches locations against the
    decoded, normalised URI, so '..' and %2e%2e never reach the capture.
    """
    base = _regex_literal(base_url)
    if mode == "hub":
        # /user/<name>/ and named servers /user/<name>/<server>/.
        prefix = f"^{base}user/[^/]+/(?:[^/]+/)?static/"
    else:
        prefix = f"^{base}static/"
    return [{"name": d.name, "regex": f"{prefix}{d.name}/(?<deploykit_asset>[^/].*)$", "root": d.root,
             "gzip_static": d.gzip_static} for d in dirs]
