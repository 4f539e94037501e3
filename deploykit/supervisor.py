"""The supervisor adapter, over supervisord's XML-RPC interface (never by parsing supervisorctl).

`apply_update` does what `supervisorctl update` does: reloadConfig gives the groups added,
changed and removed (supervisord compares parsed settings, so a comment edit restarts
nothing); removed ones are stopped and removed, changed ones stopped, removed and added
again, new ones added. Programs that did not change keep their pid.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

from deploykit.errors import OperationFailed
from deploykit.paths import Paths

RUNNING_STATES = {"RUNNING"}


class SupervisorError(OperationFailed):
    pass


class Supervisor:
    def __init__(self, paths: Paths, python: str = sys.executable):
        self.paths = paths
        self.python = python

    def rpc(self):
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, serverurl=f"unix://{self.paths.supervisor_socket}")
        # The host part is ignored by the unix-socket transport.
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def probe_running(self) -> bool:
        if not Path(self.paths.supervisor_socket).exists():
            return False
        try:
            return self.rpc().supervisor.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    def probe_pid(self) -> int | None:
        try:
            return int(self.rpc().supervisor.getPID())
        except (OSError, xmlrpc.client.Error):
            return None

    def probe_programs(self) -> dict[str, dict]:
        """name -> {'state': 'RUNNING', 'pid': 123, ...} for every program supervisord knows."""
        try:
            infos = self.rpc().supervisor.getAllProcessInfo()
        except (OSError, xmlrpc.client.Error):
            return {}
        return {i["name"]: {"state": i["statename"], "pid": i["pid"], "description": i["description"]}
                for i in infos}

    def apply_start(self, timeout: float = 20) -> None:
        """Start this deployment's own supervisord (local target), or, for the system target under
        --root, the distribution's supervisord with the config under the root, as its init script would."""
        if self.paths.target != "local" and self.paths.root == Path("/"):
            raise SupervisorError("supervisord is not running; start it with `service supervisor start` "
                                  "(or `systemctl start supervisor`)")
        if self.paths.target == "local":
            argv, cwd, env = [self.python, "-m", "supervisor.supervisord"], self.paths.state_dir, None
        else:
            package = Path("/usr/bin/supervisord")
            argv = [str(package)] if package.exists() else [self.python, "-m", "supervisor.supervisord"]
            cwd, env = self.paths.root, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        res = subprocess.run([*argv, "-c", str(self.paths.supervisord_conf)],
                             capture_output=True, text=True, timeout=60, cwd=str(cwd), env=env)
        if res.returncode != 0:
            raise SupervisorError(f"supervisord did not start: {(res.stderr or res.stdout).strip()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.probe_running():
                return
            time.sleep(0.05)
        raise SupervisorError(f"supervisord did not answer on {self.paths.supervisor_socket} within {timeout:.0f} s")

    def probe_reread(self) -> tuple[list[str], list[str], list[str]]:
        """Validate the program files on disk: (added, changed, removed), or an error naming the problem."""
        try:
            added, changed, removed = self.rpc().supervisor.reloadConfig()[0]
        except xmlrpc.client.Fault as exc:
            raise SupervisorError(f"supervisor rejected the configuration: {exc.faultString}") from None
        if self.paths.target == "system":
            # The distribution's supervisord runs other people's programs too: their pending
            # edits are theirs to apply, so deploykit's update touches only its own.
            ours = self._ours()
            added, changed, removed = ([n for n in names if ours(n)] for names in (added, changed, removed))
        return added, changed, removed

    def _ours(self):
        """Whether a program is deploykit's: its file is conf.d/deploykit-<name>.conf, or (once that
        file is gone) the group supervisord still runs logs under deploykit's log dir."""
        logs = {i["group"]: str(i.get("stdout_logfile") or "") for i in self.rpc().supervisor.getAllProcessInfo()}
        prefix = str(self.paths.log_dir) + "/"
        return lambda name: self.paths.program_conf(name).exists() or logs.get(name, "").startswith(prefix)

    def apply_update(self) -> list[str]:
        added, changed, removed = self.probe_reread()
        server = self.rpc().supervisor
        done = []
        for name in removed:
            self._stop_group(server, name)
            server.removeProcessGroup(name)
            done.append(f"stopped {name} (removed)")
        for name in changed:
            self._stop_group(server, name)
            server.removeProcessGroup(name)
            server.addProcessGroup(name)
            done.append(f"restarted {name} (changed)")
        for name in added:
            server.addProcessGroup(name)
            done.append(f"started {name} (added)")
        return done

    @staticmethod
    def _stop_group(server, name: str) -> None:
        try:
            server.stopProcessGroup(name)
        except xmlrpc.client.Fault as exc:
            if "NOT_RUNNING" not in exc.faultString and "BAD_NAME" not in exc.faultString:
                raise

    def apply_restart(self, name: str) -> None:
        server = self.rpc().supervisor
        try:
            server.stopProcess(name)
        except xmlrpc.client.Fault as exc:
            if "NOT_RUNNING" not in exc.faultString:
                raise
        server.startProcess(name, False)

    def apply_start_program(self, name: str) -> None:
        try:
            self.rpc().supervisor.startProcess(name, False)
        except xmlrpc.client.Fault as exc:
            if "ALREADY_STARTED" not in exc.faultString:
                raise

    def wait_running(self, names: list[str], timeout: float = 60) -> None:
        """Wait until each program has passed its startsecs and is RUNNING."""
        deadline = time.monotonic() + timeout
        states: dict = {}
        while time.monotonic() < deadline:
            states = self.probe_programs()
            if all(states.get(n, {}).get("state") == "RUNNING" for n in names):
                return
            bad = [n for n in names if states.get(n, {}).get("state") in {"FATAL", "BACKOFF", "EXITED"}]
            if bad and states[bad[0]]["state"] == "FATAL":
                break
            time.sleep(0.1)
        summary = ", ".join(f"{n}: {states.get(n, {}).get('state', 'missing')}" for n in names)
        raise SupervisorError(f"programs did not reach RUNNING ({summary}); see {self.paths.log_dir}")

    def apply_shutdown(self, timeout: float = 30) -> bool:
        pid = self.probe_pid()
        if pid is None:
            return False
        try:
            self.rpc().supervisor.shutdown()
        except (OSError, xmlrpc.client.Error):
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.05)
        return True
