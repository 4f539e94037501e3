"""The desired state: every file deploykit owns (content, mode, owner) and every program.

Pure: build_desired_state takes the spec, the paths, facts about the host and the deployment's
materials (secrets, certificate paths), and returns data. Nothing is read or written here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from deploykit.host import Host
from deploykit.labassets import StaticDir, build_static_locations
from deploykit.materials import Materials
from deploykit.paths import Paths
from deploykit.render import render_program, render_template
from deploykit.spawners import SpawnerFacts
from deploykit.spec import Spec
from deploykit.tlsprofile import INTERMEDIATE

WORKER_SHUTDOWN_TIMEOUT = "30s"


@dataclasses.dataclass(frozen=True)
class FileSpec:
    path: Path
    content: bytes
    mode: int = 0o644
    owner: str | None = None     # user name; None = whoever runs deploykit
    group: str | None = None
    secret: bool = False         # never shown in diffs or logs
    kind: str = "config"         # config | secret | cert | page: uninstall keeps certs unless asked


@dataclasses.dataclass(frozen=True)
class DirSpec:
    path: Path
    mode: int = 0o700
    owner: str | None = None


@dataclasses.dataclass(frozen=True)
class Symlink:
    path: Path
    target: Path


@dataclasses.dataclass(frozen=True)
class Program:
    """A supervisor program and the files whose change means it must restart."""

    name: str
    conf: Path
    depends_on: tuple[Path, ...] = ()


@dataclasses.dataclass(frozen=True)
class VerifyTarget:
    """What must answer through nginx once applied: Jupyter's (or the hub's) version JSON."""

    domain: str
    port: int
    path: str
    tls: bool
    cafile: Path | None


@dataclasses.dataclass(frozen=True)
class DesiredState:
    files: tuple[FileSpec, ...]
    dirs: tuple[DirSpec, ...]
    programs: tuple[Program, ...]
    symlinks: tuple[Symlink, ...] = ()
    url: str = ""
    verify: VerifyTarget | None = None
    nginx_files: tuple[Path, ...] = ()

    def programs_for(self, changed: set[Path]) -> list[str]:
        """Programs whose section or inputs are among the changed paths."""
        return [p.name for p in self.programs if p.conf in changed or changed & set(p.depends_on)]

    def file(self, path: Path) -> FileSpec:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)


def public_url(spec: Spec) -> str:
    http = spec.http
    if spec.tls.mode == "off":
        scheme, port, default = "http", http.http_port, 80
    else:
        scheme, port, default = "https", http.https_port, 443
    host = f"[{spec.deployment.domain}]" if ":" in spec.deployment.domain else spec.deployment.domain
    suffix = "" if port == default else f":{port}"
    return f"{scheme}://{host}{suffix}{http.base_url}"


def notebook_dir(spec: Spec, paths: Paths) -> str:
    return spec.notebook.notebook_dir or str(paths.default_notebook_dir)


def jupyter_python(spec: Spec, host: Host) -> str:
    return spec.deployment.python or host.python


def build_nginx_files(spec: Spec, paths: Paths, host: Host, materials: Materials,
                      upstream_port: int, login_path: str, static_dirs: tuple[StaticDir, ...] = ()) -> list[FileSpec]:
    http = spec.http
    tls_enabled = spec.tls.mode != "off"
    files = []
    snippets = paths.nginx_snippets
    if paths.target == "local":
        files.append(FileSpec(paths.nginx_main_conf, render_template(
            "nginx/main.conf.j2", prefix=str(paths.nginx_prefix), main_conf=str(paths.nginx_main_conf),
            # As root, workers would otherwise run as nobody and could not use the 0700 state dir.
            user=host.user if host.is_root else "",
            pid=str(paths.nginx_pid), error_log=str(paths.log("nginx-error")),
            access_log=str(paths.log("nginx-access")), temp=str(paths.nginx_temp),
            snippets=str(snippets), site_dir=str(paths.nginx_site.parent),
            worker_shutdown_timeout=WORKER_SHUTDOWN_TIMEOUT,
        ).encode()))
        files.append(FileSpec(snippets / "mime.types", render_template("nginx/mime.types.j2").encode()))
    elif paths.nginx_main_snippet is not None:
        files.append(FileSpec(paths.nginx_main_snippet, render_template(
            "nginx/main_context.conf.j2", worker_shutdown_timeout=WORKER_SHUTDOWN_TIMEOUT).encode()))
    files.append(FileSpec(snippets / "ssl.conf", render_template("nginx/ssl.conf.j2", tls=INTERMEDIATE).encode()))
    files.append(FileSpec(snippets / "proxy.conf", render_template("nginx/proxy.conf.j2").encode()))
    files.append(FileSpec(snippets / "security-headers.conf", render_template(
        "nginx/security-headers.conf.j2", tls_enabled=tls_enabled, hsts_max_age=INTERMEDIATE["hsts_max_age"]).encode()))
    files.append(FileSpec(snippets / "static-assets.conf", render_template(
        "nginx/static-assets.conf.j2", snippets=str(snippets)).encode()))
    # Docker's user servers run the image's JupyterLab, not the files on this host.
    if not http.static_assets or (spec.deployment.mode == "hub" and spec.hub.spawner == "docker"):
        static_dirs = ()
    files.append(FileSpec(paths.nginx_error_page_dir / "deploykit-errors" / "unavailable.html",
                          render_template("nginx/unavailable.html.j2").encode(), kind="page"))
    site = render_template(
        "nginx/site.conf.j2", domain=spec.deployment.domain, mode=spec.deployment.mode,
        upstream_port=upstream_port, ipv6=host.ipv6, tls_enabled=tls_enabled,
        http_port=http.http_port, https_port=http.https_port,
        # The system's nginx may serve other sites on the port: see site.conf.j2.
        https_default_server=paths.target == "system",
        https_port_suffix="" if http.https_port == 443 else f":{http.https_port}",
        acme_webroot=str(paths.acme_webroot), snippets=str(snippets),
        cert=str(materials.cert_path) if tls_enabled else "", key=str(materials.key_path) if tls_enabled else "",
        hsts_max_age=INTERMEDIATE["hsts_max_age"], upload_limit=http.upload_limit,
        extra_directives=list(http.extra_directives), base_url=http.base_url,
        login_rate_limit=http.login_rate_limit, login_path=login_path,
        error_page_root=str(paths.nginx_error_page_dir),
        static_locations=build_static_locations(http.base_url, spec.deployment.mode, static_dirs),
    )
    files.append(FileSpec(paths.nginx_site, site.encode()))
    return files


def build_notebook_files(spec: Spec, paths: Paths, host: Host, materials: Materials,
                         account=None) -> tuple[list[FileSpec], list[Program]]:
    """account: the system target's service user (system.ServiceAccount), looked up at the edge."""
    from deploykit.kernels import kernel_search_path

    python = jupyter_python(spec, host)
    config = paths.jupyter_config_dir / "jupyter_server_config.py"
    hash_path = paths.secret("notebook-password.hash")
    hostnames = ["localhost", "127.0.0.1", "::1"]
    if spec.deployment.domain not in hostnames:
        hostnames.append(spec.deployment.domain)
    text = render_template(
        "jupyter/jupyter_server_config.py.j2", domain=spec.deployment.domain,
        port=spec.internal.jupyter_port, base_url=spec.http.base_url, root_dir=notebook_dir(spec, paths),
        default_url=spec.notebook.default_url, local_hostnames=hostnames, password_hash_file=str(hash_path),
        cookie_secret_file=str(paths.secret("jupyter-cookie-secret")),
        allow_root=host.is_root and paths.target == "local",
    )
    # No secret in it (the hash stays in its own file), but nothing here is for other users either.
    files = [FileSpec(config, text.encode(), mode=0o600, secret=False)]
    env = {
        "HOME": host.home, "USER": host.user, "PATH": host.program_path(python),
        "JUPYTER_CONFIG_DIR": str(paths.jupyter_config_dir),
        "JUPYTER_DATA_DIR": str(paths.jupyter_data_dir),
        "JUPYTER_RUNTIME_DIR": str(paths.jupyter_runtime_dir),
        # In a venv, Jupyter ranks the env's share/jupyter above JUPYTER_DATA_DIR; JUPYTER_PATH
        # comes first, so deploykit's kernelspecs (python3 renamed included) win.
        "JUPYTER_PATH": kernel_search_path(spec, paths),
    }
    run_as = ""
    if paths.target == "system":
        # The system target's Jupyter runs as the service user, never as root.
        run_as = account.name
        env.update(account.environment())
    conf = paths.program_conf("jupyter")
    files.append(FileSpec(conf, render_program(
        "jupyter", "Jupyter Server (Notebook 7 and JupyterLab)", [python, "-m", "notebook"],
        notebook_dir(spec, paths), env, str(paths.log("jupyter")), user=run_as,
    ).encode()))
    program = Program("jupyter", conf, depends_on=(config, hash_path, paths.secret("jupyter-cookie-secret")))
    return files, [program]


def build_supervisord_files(paths: Paths) -> list[FileSpec]:
    if paths.target != "local":
        return []
    return [FileSpec(paths.supervisord_conf, render_template(
        "supervisor/supervisord.conf.j2", socket=str(paths.supervisor_socket), log=str(paths.log("supervisord")),
        pid=str(paths.supervisord_pid), log_dir=str(paths.log_dir), programs=str(paths.supervisor_programs),
    ).encode())]


def build_desired_state(spec: Spec, paths: Paths, host: Host, materials: Materials,
                        static_dirs: tuple[StaticDir, ...] = (),
                        spawner_facts: SpawnerFacts = SpawnerFacts(), account=None) -> DesiredState:
    """static_dirs: the Jupyter environment's bundle directories (labassets.probe_static_dirs);
    spawner_facts: what the hub's spawner needs to know (spawners.probe_spawner_facts);
    account: the system target's service user (system.read_service_account). All are facts
    gathered at the edge, so this stays pure."""
    if spec.deployment.mode == "hub":
        from deploykit.hub import build_hub_files

        app_files, programs, upstream_port, login_path = build_hub_files(spec, paths, host, materials, spawner_facts)
        verify_path = spec.http.base_url + "hub/api/"
    else:
        app_files, programs = build_notebook_files(spec, paths, host, materials, account)
        upstream_port, login_path = spec.internal.jupyter_port, spec.http.base_url + "login"
        verify_path = spec.http.base_url + "api"
    nginx_files = build_nginx_files(spec, paths, host, materials, upstream_port, login_path, static_dirs)
    files: list[FileSpec] = [*build_supervisord_files(paths), *nginx_files, *app_files]
    for path, content in materials.secrets.items():
        files.append(FileSpec(path, content, mode=0o600, secret=True,
                              kind="cert" if path.parent.parent == paths.tls_dir else "secret"))
    for path, content in materials.public.items():
        files.append(FileSpec(path, content, mode=0o644, kind="cert"))
    from deploykit.kernels import build_kernel_dirs, build_kernel_files

    files += build_kernel_files(spec, paths, host)
    from deploykit.acme import build_renewal_files

    files += build_renewal_files(spec, paths, host)
    dirs = [DirSpec(d) for d in paths.owned_dirs()]
    dirs.append(DirSpec(Path(notebook_dir(spec, paths)), mode=0o700))
    dirs += build_kernel_dirs(spec, paths)
    if spec.deployment.mode == "hub":
        # The user servers' shared config and kernels: other users read them, so 0755 all the way.
        dirs += [DirSpec(paths.shared_data_dir, 0o755), DirSpec(paths.shared_data_dir / "config", 0o755)]
    dirs = list({d.path: d for d in dirs[::-1]}.values())[::-1]  # one entry per path, the first wins
    symlinks = ()
    if paths.nginx_site_link is not None:
        symlinks = (Symlink(paths.nginx_site_link, paths.nginx_site),)
    desired = DesiredState(files=tuple(files), dirs=tuple(dirs), programs=tuple(programs), symlinks=symlinks,
                        url=public_url(spec), verify=VerifyTarget(
                            spec.deployment.domain,
                            spec.http.http_port if spec.tls.mode == "off" else spec.http.https_port,
                            verify_path, spec.tls.mode != "off", materials.cert_path),
                        nginx_files=tuple(f.path for f in nginx_files) + tuple(
                            p for p in (materials.cert_path, materials.key_path) if p))
    if paths.target == "system":
        from deploykit.system import build_system_state

        desired = build_system_state(desired, spec, paths, host, account)
    return desired
