"""Every path deploykit uses, from one object built from a target and a root prefix.

Nothing here reads the environment or the filesystem: the CLI decides the state dir and the
root, and tests lay a whole server layout under a temp dir by passing them in.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


# Secrets the Notebook's Jupyter itself reads (system target: root's files, group-readable).
JUPYTER_READS = ("notebook-password.hash", "jupyter-cookie-secret")


@dataclasses.dataclass(frozen=True)
class Paths:
    target: str
    root: Path
    state_dir: Path
    etc_nginx: Path
    nginx_main_conf: Path      # local: written by deploykit; system: the distribution's, never written
    nginx_prefix: Path
    nginx_site: Path
    nginx_site_link: Path | None
    nginx_snippets: Path
    nginx_main_snippet: Path | None  # system: main-context directives via modules-enabled
    nginx_pid: Path
    nginx_error_page_dir: Path
    supervisord_conf: Path     # local: written by deploykit; system: the distribution's
    supervisor_programs: Path
    supervisor_socket: Path
    supervisord_pid: Path
    jupyter_config_dir: Path
    jupyter_data_dir: Path
    jupyter_runtime_dir: Path
    hub_dir: Path
    tls_dir: Path
    acme_webroot: Path
    certbot_dir: Path
    log_dir: Path
    run_dir: Path
    secrets_dir: Path
    checkpoints: Path
    default_notebook_dir: Path

    @property
    def spec(self) -> Path:
        return self.state_dir / "deploykit.toml"

    @property
    def lock(self) -> Path:
        return self.state_dir / ".lock"

    @property
    def shared_data_dir(self) -> Path:
        """World-readable Jupyter data (kernelspecs) that every user's server reads in hub mode.

        Outside the state dir, which is 0700: user servers run as other users.
        """
        if self.target == "system":
            return self.root / "usr/local/share/deploykit"
        return self.state_dir.parent / f"{self.state_dir.name}-shared"

    @property
    def record(self) -> Path:
        """The record of every file deploykit wrote (deploykit files)."""
        return self.state_dir / "files.json"

    @property
    def nginx_temp(self) -> Path:
        return self.state_dir / "nginx" / "tmp"

    def program_conf(self, name: str) -> Path:
        prefix = "deploykit-" if self.target == "system" else ""
        return self.supervisor_programs / f"{prefix}{name}.conf"

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def secret(self, name: str) -> Path:
        if self.target == "system" and name in JUPYTER_READS:
            # Jupyter reads these as the service user, who cannot enter the 0700 state dir.
            return self.jupyter_config_dir / name
        return self.secrets_dir / name

    def owned_dirs(self) -> list[Path]:
        """Directories deploykit creates (and may remove on uninstall), outermost first."""
        dirs = [self.state_dir, self.log_dir, self.run_dir, self.secrets_dir, self.tls_dir,
                self.acme_webroot, self.checkpoints, self.nginx_temp, self.jupyter_config_dir,
                self.jupyter_data_dir, self.jupyter_runtime_dir, self.hub_dir, self.nginx_error_page_dir]
        if self.target == "local":
            dirs += [self.nginx_prefix, self.nginx_site.parent, self.nginx_snippets, self.supervisor_programs]
        else:
            dirs += [self.nginx_snippets]
        out: list[Path] = []
        for d in dirs:
            if d not in out:
                out.append(d)
        return out


def local_paths(state_dir: Path) -> Paths:
    """The local target: everything, daemons' config included, under one state dir."""
    s = Path(state_dir)
    nginx = s / "nginx"
    sup = s / "supervisor"
    run = s / "run"
    return Paths(
        target="local", root=Path("/"), state_dir=s,
        etc_nginx=nginx,
        nginx_main_conf=nginx / "nginx.conf",
        nginx_prefix=nginx,
        nginx_site=nginx / "sites" / "deploykit.conf",
        nginx_site_link=None,
        nginx_snippets=nginx / "snippets",
        nginx_main_snippet=None,
        nginx_pid=run / "nginx.pid",
        nginx_error_page_dir=nginx / "html",
        supervisord_conf=sup / "supervisord.conf",
        supervisor_programs=sup / "programs",
        supervisor_socket=run / "supervisor.sock",
        supervisord_pid=run / "supervisord.pid",
        jupyter_config_dir=s / "jupyter",
        jupyter_data_dir=s / "jupyter" / "data",
        jupyter_runtime_dir=run / "jupyter",
        hub_dir=s / "jupyterhub",
        tls_dir=s / "tls",
        acme_webroot=s / "acme-webroot",
        certbot_dir=s / "certbot",
        log_dir=s / "logs",
        run_dir=run,
        secrets_dir=s / "secrets",
        checkpoints=s / "checkpoints",
        default_notebook_dir=s / "notebooks",
    )


def system_paths(root: Path = Path("/"), state_dir: Path | None = None) -> Paths:
    """The Debian/Ubuntu layout, under root (like DESTDIR) so tests never touch the host's /etc."""
    r = Path(root)
    s = Path(state_dir) if state_dir else r / "var/lib/deploykit"
    etc_nginx = r / "etc/nginx"
    return Paths(
        target="system", root=r, state_dir=s,
        etc_nginx=etc_nginx,
        nginx_main_conf=etc_nginx / "nginx.conf",
        nginx_prefix=etc_nginx,
        nginx_site=etc_nginx / "sites-available" / "deploykit.conf",
        nginx_site_link=etc_nginx / "sites-enabled" / "deploykit.conf",
        nginx_snippets=etc_nginx / "snippets" / "deploykit",
        nginx_main_snippet=etc_nginx / "modules-enabled" / "90-deploykit-main.conf",
        nginx_pid=r / "run/nginx.pid",
        # nginx's workers run as www-data and the state dir is 0700: what they serve lives outside it.
        nginx_error_page_dir=r / "var/www/deploykit",
        supervisord_conf=r / "etc/supervisor/supervisord.conf",
        supervisor_programs=r / "etc/supervisor/conf.d",
        supervisor_socket=r / "run/supervisor.sock",
        supervisord_pid=r / "run/supervisord.pid",
        jupyter_config_dir=r / "etc/jupyter",
        # Jupyter runs as the service user and writes to both (nbsignatures.db, kernel connection
        # files); not under /run, which is empty after a reboot when supervisord starts Jupyter.
        jupyter_data_dir=r / "var/lib/jupyter/data",
        jupyter_runtime_dir=r / "var/lib/jupyter/runtime",
        hub_dir=r / "etc/jupyterhub",
        tls_dir=s / "tls",
        acme_webroot=r / "var/www/deploykit/acme",
        certbot_dir=r / "etc/letsencrypt",
        log_dir=r / "var/log/deploykit",
        run_dir=r / "run/deploykit",
        secrets_dir=s / "secrets",
        checkpoints=s / "checkpoints",
        default_notebook_dir=r / "srv/jupyter",
    )


def paths_for(target: str, state_dir: Path, root: Path = Path("/")) -> Paths:
    if target == "system":
        return system_paths(root, state_dir)
    return local_paths(state_dir)
