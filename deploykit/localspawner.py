"""Hub side: LocalProcessSpawners that keep each server's output in a log file of its own, and
one for hub users who are not system accounts.

A local server inherits the hub's stdout and stderr otherwise: a pipe to supervisord, which
goes away when the hub restarts. The server outlives the restart (cleanup_servers is off), but
its next write, and every kernel it starts afterwards, meets a closed pipe (kernels die of it).

With the native and shared-password authenticators a hub user is just a name, but a local
process must run as some system account, and users must not share one (they could read each
other's files). As TLJH does, each hub user `name` gets a locked system account
`jupyter-name`, made on first spawn; its server runs as that account in its home.

Imported by JupyterHub (the hub runs from deploykit's own environment), never by the CLI.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from urllib.parse import quote

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Unicode

_ACCOUNT = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class LogFileSpawner(LocalProcessSpawner):
    server_log_dir = Unicode("", config=True, help="Directory of the servers' log files (USER[-SERVER].log).")

    def server_log_path(self) -> str:
        # Escaped: a hub user name may hold characters a file name must not.
        name = quote(self.user.name, safe="") + (f"-{quote(self.name, safe='')}" if self.name else "")
        return os.path.join(self.server_log_dir, name + ".log")

    async def start(self):
        if not self.server_log_dir:
            return await super().start()
        os.makedirs(self.server_log_dir, mode=0o700, exist_ok=True)
        # Root's file, appended to by the server through the descriptor it inherits: one per
        # server, so no user can rewrite another's lines.
        fd = os.open(self.server_log_path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        given = self.popen_kwargs
        self.popen_kwargs = {**given, "stdout": fd, "stderr": subprocess.STDOUT}
        try:
            return await super().start()
        finally:
            self.popen_kwargs = given
            os.close(fd)


class AccountSpawner(LogFileSpawner):
    account_prefix = Unicode("jupyter-", config=True, help="Prefix of the system account made for each hub user.")

    @property
    def account(self) -> str:
        name = self.account_prefix + self.user.name
        if not _ACCOUNT.match(name):
            raise ValueError(f"hub user {self.user.name!r} cannot have a system account ({name!r} is not a "
                             "valid user name: lower-case letters, digits, '_' and '-', at most 32 characters)")
        return name

    def ensure_account(self) -> None:
        try:
            pwd.getpwnam(self.account)
            return
        except KeyError:
            pass
        # Locked password (useradd's default): the account is only ever entered by this spawner.
        res = subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/bash",
                              "--comment", f"JupyterHub user {self.user.name}", self.account],
                             capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"could not create system account {self.account}: {res.stderr.strip()}")
        self.log.info("created system account %s for hub user %s", self.account, self.user.name)

    def make_preexec_fn(self, name):
        return super().make_preexec_fn(self.account)

    def user_env(self, env):
        entry = pwd.getpwnam(self.account)
        env["USER"] = self.account
        if entry.pw_dir:
            env["HOME"] = entry.pw_dir
        if entry.pw_shell:
            env["SHELL"] = entry.pw_shell
        return env

    async def start(self):
        self.ensure_account()
        return await super().start()
