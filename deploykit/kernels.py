"""Kernels from other Python environments (venvs, conda envs), named and ordered as the operator
wants, and the deployment's own python3 kernel under a clearer name.

The spec's [[kernels]] tables are the truth. build_* turn them into kernelspec files (their
content made by jupyter_client's KernelSpec) that apply writes like every other file: atomically,
checkpointed, recorded, and deleted again when a kernel leaves the spec. probe_* run a candidate
interpreter (with a timeout) to learn what it is; find_* walk directories for environments.
Nothing here writes.

Where the kernelspecs go: Notebook mode, the deployment's JUPYTER_DATA_DIR; hub mode, a
world-readable directory outside the 0700 state dir (user servers run as other users). Either
way it is first on JUPYTER_PATH (kernel_search_path), because Jupyter otherwise ranks a venv's
own share/jupyter above its data dir and the renamed python3 would not win.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

from deploykit import validate as v
from deploykit.desired import DirSpec, FileSpec
from deploykit.errors import BadInput

DEFAULT_KERNEL = "python3"          # jupyter_client.kernelspec.NATIVE_KERNEL_NAME
PROBE_TIMEOUT = 30.0                # a cold conda env can take a while to import ipykernel
LOGOS = ("logo-32x32.png", "logo-64x64.png")
_PYTHON_NAME = re.compile(r"^(python|pypy)(\d+(\.\d+)?)?$")
_PROBE_MARK = "deploykit-probe:"
_PROBE_CODE = (
    "import json, os, sys\n"
    "try:\n"
    "    import ipykernel\n"
    "    ipk = getattr(ipykernel, '__version__', '?')\n"
    "except Exception:\n"
    "    ipk = None\n"
    f"print({_PROBE_MARK!r} + json.dumps({{'prefix': sys.prefix, 'base_prefix': sys.base_prefix,\n"
    "    'version': '%d.%d.%d' % sys.version_info[:3], 'ipykernel': ipk,\n"
    "    'conda': os.path.isdir(os.path.join(sys.prefix, 'conda-meta'))}))\n"
)
_LIST_MARK = "deploykit-kernels:"
_LIST_CODE = (
    "import json\n"
    "from jupyter_client.kernelspec import KernelSpecManager\n"
    f"print({_LIST_MARK!r} + json.dumps(KernelSpecManager().get_all_specs()))\n"
)


# -- where --------------------------------------------------------------------------------------

def kernel_root(spec, paths) -> Path:
    """The Jupyter data directory whose kernels/ holds deploykit's kernelspecs."""
    return paths.shared_data_dir if spec.deployment.mode == "hub" else paths.jupyter_data_dir


def kernel_search_path(spec, paths) -> str:
    """JUPYTER_PATH for the deployment's Jupyter (Notebook) or every user's server (hub Spawner)."""
    return str(kernel_root(spec, paths))


def kernel_dir(spec, paths, name: str) -> Path:
    return kernel_root(spec, paths) / "kernels" / name


# -- pure: spec -> files --------------------------------------------------------------------------

def shown_names(spec) -> dict[str, str]:
    """Each kernel's display name as the web interface shows it.

    JupyterLab and Notebook 7 sort kernels by display name, so an explicit order can only work
    as a prefix; it is zero-padded so that 10 sorts after 9.
    """
    width = max((len(str(k.order)) for k in spec.kernels if k.order), default=1)
    return {k.name: f"{k.order:0{width}d}. {k.display_name}" if k.order else k.display_name
            for k in spec.kernels}


def ui_order(entries: list[tuple[str, str]], default: str = DEFAULT_KERNEL) -> list[tuple[str, str]]:
    """(name, display name) pairs in the order JupyterLab's launcher shows them: its default
    kernel first, then by display name."""
    return sorted(entries, key=lambda e: (e[0] != default, e[1].casefold(), e[1], e[0]))


def build_kernelspec(argv0: str, display_name: str, env: dict[str, str], metadata: dict) -> bytes:
    """kernel.json for an IPython kernel started by argv0, via jupyter_client's own model."""
    from jupyter_client.kernelspec import KernelSpec

    ks = KernelSpec(argv=[argv0, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    display_name=display_name, language="python", env=env, metadata=metadata)
    # Empty fields would only add noise (and an empty protocol version next to real ones).
    data = {k: val for k, val in ks.to_dict().items() if val not in ("", {}, [])}
    return (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _logos() -> list[tuple[str, bytes]]:
    """ipykernel's Python logos, so the launcher shows them for these kernels too."""
    try:
        from ipykernel.kernelspec import RESOURCES
    except ImportError:
        return []
    out = []
    for name in LOGOS:
        try:
            out.append((name, (Path(RESOURCES) / name).read_bytes()))
        except OSError:
            pass
    return out


def kernel_env(python: str) -> dict[str, str]:
    """What activating the environment would matter most for: its bin first on PATH (so `!pip`
    and other tools a notebook shells out to are the environment's own). jupyter_client fills
    in ${PATH} from the server's environment when it starts the kernel."""
    return {"PATH": os.path.dirname(python) + ":${PATH}"}


def _entries(spec):
    shown = shown_names(spec)
    entries = [(k.name, k.python, shown[k.name], kernel_env(k.python), {}) for k in spec.kernels]
    if spec.deployment.default_kernel_display_name:
        # "python" is what jupyter_client replaces by the server's own interpreter: exactly the
        # kernel Jupyter would have offered as python3, under the operator's name. The server's
        # environment has a current ipykernel (Notebook 7 needs it), so the debugger works.
        entries.append((DEFAULT_KERNEL, "python", spec.deployment.default_kernel_display_name, {},
                        {"debugger": True}))
    return entries


def build_kernel_files(spec, paths, host) -> list[FileSpec]:
    files: list[FileSpec] = []
    entries = _entries(spec)
    logos = _logos() if entries else []
    for name, argv0, display, env, metadata in entries:
        d = kernel_dir(spec, paths, name)
        files.append(FileSpec(d / "kernel.json", build_kernelspec(argv0, display, env, metadata),
                              mode=0o644, kind="kernel"))
        files += [FileSpec(d / logo, content, mode=0o644, kind="kernel") for logo, content in logos]
    return files


def build_kernel_dirs(spec, paths) -> list[DirSpec]:
    """Every level made explicitly 0755: fsio would make missing parents 0700 under deploykit's
    umask, and in hub mode user servers (other users) must read them."""
    names = [e[0] for e in _entries(spec)]
    if not names:
        return []
    root = kernel_root(spec, paths)
    dirs = [DirSpec(root, 0o755)] if spec.deployment.mode == "hub" else []
    dirs.append(DirSpec(root / "kernels", 0o755))
    dirs += [DirSpec(root / "kernels" / n, 0o755) for n in names]
    return dirs


def with_kernel(spec, name: str, python: str, display_name: str, order: int = 0):
    kernels = [*spec.as_dict().get("kernels", []),
               {"name": name, "python": python, "display_name": display_name, "order": order}]
    return spec.with_values({"kernels": kernels})


def without_kernel(spec, name: str):
    return spec.with_values({"kernels": [k for k in spec.as_dict().get("kernels", []) if k["name"] != name]})


def add_command(python: str, name: str, display_name: str, state_dir: str | None = None) -> str:
    """The `deploykit kernel add` command line for a found environment, ready to paste."""
    parts = ["deploykit", "kernel", "add", "--python", python, "--name", name, "--display-name", display_name]
    if state_dir:
        parts += ["--state-dir", state_dir]
    return shlex.join(parts)


# -- probing an interpreter -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PythonFacts:
    python: str
    prefix: str
    version: str
    ipykernel: str | None
    conda: bool

    @property
    def short_version(self) -> str:
        return ".".join(self.version.split(".")[:2])

    @property
    def kind(self) -> str:
        return "conda" if self.conda else "venv" if Path(self.prefix, "pyvenv.cfg").is_file() else "python"


class ProbeFailed(Exception):
    pass


def _probe_env(python: str) -> dict[str, str]:
    # Like the kernel's own start: no PYTHONPATH/PYTHONHOME from whoever runs deploykit.
    env = {"PATH": os.path.dirname(python) + ":/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    if os.environ.get("HOME"):
        env["HOME"] = os.environ["HOME"]
    return env


def looks_like_python(path: str) -> bool:
    return bool(_PYTHON_NAME.match(os.path.basename(path)))


def probe_python(python: str, timeout: float = PROBE_TIMEOUT) -> PythonFacts:
    """Run the interpreter once to learn its prefix, version and whether ipykernel imports.

    Only files named like a Python interpreter are ever run: this must not execute an
    arbitrary program that happens to accept -c.
    """
    if not looks_like_python(python):
        raise ProbeFailed("not named like a Python interpreter (python, python3, python3.X)")
    try:
        res = subprocess.run([python, "-c", _PROBE_CODE], capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL, env=_probe_env(python))
    except subprocess.TimeoutExpired:
        raise ProbeFailed(f"did not answer within {timeout:.0f} s") from None
    except OSError as exc:
        raise ProbeFailed(f"could not be run ({exc.strerror or exc})") from None
    for line in res.stdout.splitlines():
        if line.startswith(_PROBE_MARK):
            try:
                data = json.loads(line[len(_PROBE_MARK):])
                return PythonFacts(python, data["prefix"], data["version"], data["ipykernel"], bool(data["conda"]))
            except (ValueError, KeyError, TypeError):
                break
    said = (res.stderr.strip().splitlines() or ["no output"])[-1][:200]
    raise ProbeFailed(f"did not run as Python (exit {res.returncode}: {said})")


def check_kernel_python(python: str, where: str = "--python") -> PythonFacts:
    """A Python that can run an IPython kernel, or BadInput saying how to get one."""
    try:
        python = v.abs_path(python)
    except v.Invalid as exc:
        raise BadInput(where, python, str(exc)) from None
    p = Path(python)
    if p.is_dir():
        hint = next((str(p / "bin" / n) for n in ("python3", "python") if (p / "bin" / n).exists()), None)
        raise BadInput(where, python, "is a directory; give the environment's interpreter" +
                       (f", e.g. {hint}" if hint else ", e.g. ENV/bin/python"))
    if not p.exists():
        raise BadInput(where, python, "no such file; give the environment's interpreter, e.g. ENV/bin/python "
                                      "(`deploykit kernel discover` finds them)")
    if not os.access(python, os.X_OK) or not p.is_file():
        raise BadInput(where, python, "is not an executable file; give the environment's interpreter, "
                                      "e.g. ENV/bin/python")
    try:
        facts = probe_python(python)
    except ProbeFailed as exc:
        raise BadInput(where, python, f"is not a Python interpreter: {exc}; give the environment's "
                                      "interpreter, e.g. ENV/bin/python") from None
    if facts.ipykernel is None:
        fix = f"{shlex.quote(python)} -m pip install ipykernel"
        if facts.conda:
            fix = f"conda install -p {shlex.quote(facts.prefix)} ipykernel (or {fix})"
        raise BadInput(where, python, f"cannot run a kernel: ipykernel is not installed there; install it with: {fix}")
    return facts


def unreachable_for_others(path: str, executable: bool = True) -> str | None:
    """Hub mode: the first existing part of path that other users cannot enter (or run), if any."""
    p = Path(path)
    for d in reversed(p.parents):
        try:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return str(d)
        except FileNotFoundError:
            return None  # made by apply, 0755
        except OSError:
            return str(d)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError:
        return path
    return path if executable and not mode & stat.S_IXOTH else None


def probe_jupyter_kernels(spec, paths, host, timeout: float = 60.0) -> dict:
    """The kernelspecs the deployment's Jupyter sees ({name: {resource_dir, spec}}), by asking
    jupyter_client's KernelSpecManager in the Jupyter environment with its search path."""
    from deploykit.desired import jupyter_python

    python = jupyter_python(spec, host)
    root = kernel_search_path(spec, paths)
    env = {"PATH": host.program_path(python), "LANG": "C.UTF-8", "HOME": host.home, "JUPYTER_PATH": root,
           "JUPYTER_CONFIG_DIR": str(paths.jupyter_config_dir),
           # Hub mode: what every user sees, without this account's own ~/.local/share/jupyter.
           "JUPYTER_DATA_DIR": str(paths.jupyter_data_dir) if spec.deployment.mode != "hub" else root}
    try:
        res = subprocess.run([python, "-c", _LIST_CODE], capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProbeFailed(f"could not ask {python} for its kernelspecs: {exc}") from None
    for line in res.stdout.splitlines():
        if line.startswith(_LIST_MARK):
            return json.loads(line[len(_LIST_MARK):])
    said = (res.stderr.strip().splitlines() or ["no output"])[-1][:200]
    raise ProbeFailed(f"{python} could not list kernelspecs: {said}")


def foreign_kernels(seen: dict, spec, paths) -> dict[str, str]:
    """Kernels Jupyter sees that deploykit did not write: {name: resource dir}."""
    ours = kernel_root(spec, paths) / "kernels"
    return {name: info["resource_dir"] for name, info in seen.items()
            if Path(info["resource_dir"]).parent != ours and name != DEFAULT_KERNEL}


def check_kernel_name(spec, name: str, foreign: dict[str, str], where: str = "--name") -> str:
    try:
        name = v.kernel_name(name)
    except v.Invalid as exc:
        raise BadInput(where, name, str(exc)) from None
    if name == DEFAULT_KERNEL:
        raise BadInput(where, name, "is the deployment's own Python kernel; pick another name, or rename "
                                    "that one with `deploykit kernel rename-default --display-name TEXT`")
    if any(k.name == name for k in spec.kernels):
        raise BadInput(where, name, "is already a kernel of this deployment (see `deploykit kernel list`); "
                                    "pick another name, or `deploykit kernel remove` it first")
    if name in foreign:
        raise BadInput(where, name, f"Jupyter already has a kernel of that name ({foreign[name]}) that "
                                    "deploykit's would hide; pick another name, or remove that one with "
                                    f"`jupyter kernelspec remove {name}`")
    return name


# -- finding environments -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Found:
    python: str
    prefix: str
    source: str          # conda | venv | conda (environments.txt) ...
    label: str           # what the environment is called, for the suggested name


CONDA_ROOT_NAMES = ("miniconda3", "anaconda3", "miniforge3", "mambaforge", "micromamba", "miniconda", "anaconda")
SKIP_DIRS = {"node_modules", ".git", ".hg", "__pycache__", "site-packages", "dist-packages", ".tox", ".nox",
             ".cache", ".mypy_cache", ".pytest_cache"}
VENV_DIR_NAMES = {".venv", "venv", "env", ".env", "virtualenv", ".virtualenv"}


def env_python(prefix: Path) -> Path | None:
    for name in ("python", "python3"):
        p = Path(prefix) / "bin" / name
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


def env_label(prefix: Path) -> str:
    """A venv called .venv or venv is named after the project directory it lives in."""
    prefix = Path(prefix)
    return prefix.parent.name if prefix.name in VENV_DIR_NAMES and prefix.parent.name else prefix.name


def _is_env(d: Path) -> str | None:
    if (d / "conda-meta").is_dir():
        return "conda"
    if (d / "pyvenv.cfg").is_file():
        return "venv"
    return None


def _read_condarc_envs_dirs(path: Path) -> list[Path]:
    if not path.is_file():
        return []
    try:
        import yaml

        data = yaml.safe_load(path.read_text()) or {}
    except Exception:  # noqa: BLE001 - an unreadable or broken .condarc must not stop discovery
        return []
    dirs = data.get("envs_dirs") if isinstance(data, dict) else None
    return [Path(os.path.expanduser(str(d))) for d in dirs] if isinstance(dirs, list) else []


def find_conda_prefixes(home: Path, environ: dict) -> list[tuple[Path, str]]:
    """Conda environments: conda's envs dirs (defaults, .condarc, CONDA_ENVS_PATH), every
    environment listed in ~/.conda/environments.txt, and `conda env list` when conda is on PATH."""
    found: list[tuple[Path, str]] = []
    roots: list[Path] = []
    if environ.get("CONDA_EXE"):
        roots.append(Path(environ["CONDA_EXE"]).parent.parent)
    for var in ("MAMBA_ROOT_PREFIX", "CONDA_ROOT"):
        if environ.get(var):
            roots.append(Path(environ[var]))
    if environ.get("CONDA_PREFIX"):
        p = Path(environ["CONDA_PREFIX"])
        found.append((p, "conda (active)"))
        roots.append(p.parent.parent if p.parent.name == "envs" else p)
    roots += [home / n for n in CONDA_ROOT_NAMES] + [Path("/opt") / n for n in ("conda", *CONDA_ROOT_NAMES)]
    envs_dirs = [home / ".conda" / "envs"]
    for var in ("CONDA_ENVS_PATH", "CONDA_ENVS_DIRS"):
        envs_dirs += [Path(x) for x in environ.get(var, "").split(os.pathsep) if x]
    envs_dirs += _read_condarc_envs_dirs(home / ".condarc")
    for root in roots:
        if root.is_dir():
            found.append((root, "conda (base)"))
            envs_dirs.append(root / "envs")
            envs_dirs += _read_condarc_envs_dirs(root / ".condarc")
    for d in envs_dirs:
        try:
            found += [(e, "conda") for e in sorted(d.iterdir()) if e.is_dir()]
        except OSError:
            pass
    try:
        lines = (home / ".conda" / "environments.txt").read_text().splitlines()
    except OSError:
        lines = []
    found += [(Path(line.strip()), "conda (environments.txt)") for line in lines if line.strip().startswith("/")]
    conda = environ.get("CONDA_EXE") or shutil.which("conda", path=environ.get("PATH"))
    if conda:
        try:
            res = subprocess.run([conda, "env", "list", "--json"], capture_output=True, text=True, timeout=60,
                                 stdin=subprocess.DEVNULL)
            found += [(Path(e), "conda") for e in json.loads(res.stdout).get("envs", [])]
        except (OSError, ValueError, subprocess.TimeoutExpired, AttributeError):
            pass
    return found


def find_venvs(dirs: list[Path], max_depth: int = 3, max_dirs: int = 20000) -> list[tuple[Path, str]]:
    """Environments (venv or conda) at most max_depth levels below each directory."""
    found: list[tuple[Path, str]] = []
    seen = 0
    for top in dirs:
        stack = [(Path(top), 0)]
        while stack and seen < max_dirs:
            d, depth = stack.pop()
            seen += 1
            kind = _is_env(d)
            if kind:
                found.append((d, kind))
                continue
            if depth >= max_depth:
                continue
            try:
                children = sorted((e for e in os.scandir(d) if e.is_dir(follow_symlinks=False)
                                   and e.name not in SKIP_DIRS), key=lambda e: e.name, reverse=True)
            except OSError:
                continue
            stack += [(Path(e.path), depth + 1) for e in children]
    return found


def find_environments(dirs: list[Path], home: Path, environ: dict, max_depth: int = 3) -> list[Found]:
    """Every environment with a Python, each once (by prefix), in the order found."""
    out: dict[str, Found] = {}
    for prefix, source in [*find_conda_prefixes(home, environ), *find_venvs(dirs, max_depth)]:
        python = env_python(prefix)
        if python is None:
            continue
        key = os.path.realpath(prefix)
        if key not in out:
            out[key] = Found(str(python), str(prefix), source, env_label(prefix))
    return list(out.values())


def probe_many(pythons: list[str], workers: int = 4) -> dict[str, PythonFacts | str]:
    """probe_python for each, a few at a time; a failure is kept as its message."""
    def one(p):
        try:
            return p, probe_python(p)
        except ProbeFailed as exc:
            return p, str(exc)

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(pool.map(one, pythons))


def suggest_name(label: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9._-]+", "-", label.lower()).strip("-._")[:60] or "env"
    if not re.match(r"^[a-z0-9]", base):
        base = "env-" + base
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def suggest_display_name(facts: PythonFacts, label: str, name: str) -> str:
    for text in (f"Python {facts.short_version} ({label})", f"Python {facts.short_version} ({name})"):
        try:
            return v.display_name(text)
        except v.Invalid:
            continue
    return name
