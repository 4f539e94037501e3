"""Apply a desired state safely: plan, checkpoint, write, validate, reload, verify, or roll back.

This is the edge that changes things; the decisions come from the pure plan. Any failure after
the first write (validation, reload, verification, an exception, SIGINT or SIGTERM) restores
the checkpoint and brings the daemons back to the previous configuration before exiting 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
from pathlib import Path

from deploykit import fsio
from deploykit.checkpoint import Checkpoint, apply_prune
from deploykit.desired import DesiredState, FileSpec
from deploykit.display import Reporter
from deploykit.errors import DeploykitError, OperationFailed
from deploykit.host import Host
from deploykit.nginx import Nginx
from deploykit.paths import Paths
from deploykit.plan import DaemonFacts, Plan, build_plan
from deploykit.record import build_record, read_record, recorded_paths
from deploykit.supervisor import Supervisor
from deploykit.verify import wait_for_jupyter


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived during an apply."""


@contextlib.contextmanager
def signals_raise():
    def handler(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def signals_deferred():
    """While rolling back, a second Ctrl-C must not leave things half restored."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@dataclasses.dataclass
class Engine:
    paths: Paths
    host: Host
    reporter: Reporter
    verify_timeout: float = 90.0

    @property
    def nginx(self) -> Nginx:
        return Nginx(self.paths, self.host.nginx)

    @property
    def supervisor(self) -> Supervisor:
        return Supervisor(self.paths, self.host.python)

    def with_record(self, desired: DesiredState) -> DesiredState:
        record = FileSpec(self.paths.record, b"", mode=0o600, kind="record")
        desired = dataclasses.replace(desired, files=desired.files + (record,))
        content = build_record(desired, self.paths.record)
        files = tuple(dataclasses.replace(f, content=content) if f.path == self.paths.record else f
                      for f in desired.files)
        return dataclasses.replace(desired, files=files)

    def read_daemon_facts(self, program_names: set[str]) -> DaemonFacts:
        sup = self.supervisor
        running = sup.probe_running()
        programs = {}
        if running:
            programs = {n: i["state"] for n, i in sup.probe_programs().items() if n in program_names}
        return DaemonFacts(nginx_running=self.nginx.probe_pid() is not None, supervisord_running=running,
                           programs=programs)

    def make_plan(self, desired: DesiredState) -> tuple[DesiredState, Plan]:
        desired = self.with_record(desired)
        record = read_record(self.paths.record)
        recorded = recorded_paths(record)
        facts = fsio.read_file_facts([*(f.path for f in desired.files), *(s.path for s in desired.symlinks),
                                      *recorded])
        names = {p.name for p in desired.programs} | set(record.get("programs", []))
        return desired, build_plan(desired, facts, recorded, self.read_daemon_facts(names))

    # -- apply -------------------------------------------------------------------------------

    def apply(self, desired: DesiredState, plan: Plan, note: str = "") -> list[str]:
        """Carry out plan; on any failure roll back and raise OperationFailed."""
        cp = Checkpoint.begin(self.paths.checkpoints, note)
        done: list[str] = []
        stage = "write"
        try:
            with signals_raise():
                with self.reporter.step("write") as out:
                    self._write(desired, plan, cp)
                    out["text"] = f"{len(plan.changes)} file(s) changed" if plan.changes else "no file changes"
                stage = "validate"
                with self.reporter.step("validate") as out:
                    self._validate(plan)
                    out["text"] = "nginx -t ok" + (", supervisor reread ok" if not plan.supervisord else "")
                stage = "reload"
                with self.reporter.step("reload") as out:
                    done = self._reload(plan)
                    out["text"] = "; ".join(done) or "nothing to reload"
                stage = "verify"
                with self.reporter.step("verify") as out:
                    out["text"] = self.verify(desired)
        except (Exception, Interrupted) as exc:
            restored = self.rollback(cp, plan)
            cp.finish("rolled-back")
            reason = f"interrupted by {exc}" if isinstance(exc, Interrupted) else str(exc)
            raise OperationFailed(f"{stage} failed: {reason}\nrolled back: {restored}") from exc
        cp.finish("done")
        apply_prune(self.paths.checkpoints)
        return done

    def _write(self, desired: DesiredState, plan: Plan, cp: Checkpoint) -> None:
        for d in desired.dirs:
            fsio.ensure_dir(d.path, d.mode, d.owner)
        by_path = {f.path: f for f in desired.files}
        for change in plan.changes:
            cp.register(change.path)
            if change.action == "delete":
                fsio.apply_remove(change.path)
            elif change.action == "link":
                link = next(s for s in desired.symlinks if s.path == change.path)
                fsio.apply_symlink(link.path, link.target)
            else:
                f = by_path[change.path]
                fsio.apply_write_atomic(f.path, f.content, f.mode, f.owner, f.group)

    def _validate(self, plan: Plan) -> None:
        ok, said = self.nginx.probe_config()
        if not ok:
            raise OperationFailed(f"nginx rejected the configuration: {said}")
        if not plan.supervisord and (plan.added or plan.changed or plan.removed):
            self.supervisor.probe_reread()

    def _reload(self, plan: Plan) -> list[str]:
        done = []
        sup = self.supervisor
        if plan.supervisord == "start":
            sup.apply_start()
            done.append("supervisord started")
        else:
            if plan.added or plan.changed or plan.removed:
                done += sup.apply_update()
            for name in plan.restart:
                sup.apply_restart(name)
                done.append(f"restarted {name}")
            for name in plan.start:
                sup.apply_start_program(name)
                done.append(f"started {name}")
        if plan.nginx == "start":
            self.nginx.apply_start()
            done.append("nginx started")
        elif plan.nginx == "reload":
            self.nginx.apply_reload()
            done.append("nginx reloaded")
        return done

    def verify(self, desired: DesiredState) -> str:
        t = desired.verify
        names = [p.name for p in desired.programs]

        def give_up() -> str | None:
            states = self.supervisor.probe_programs()
            fatal = [n for n in names if states.get(n, {}).get("state") == "FATAL"]
            return f"{', '.join(fatal)} failed to start (FATAL)" if fatal else None

        probe = wait_for_jupyter(t.domain, t.port, t.path, t.tls, t.cafile, timeout=self.verify_timeout,
                                 give_up=give_up)
        if not probe.ok:
            states = self.supervisor.probe_programs()
            programs = ", ".join(f"{n} {states.get(n, {}).get('state', 'missing')}" for n in
                                 (p.name for p in desired.programs))
            raise OperationFailed(f"{desired.url} did not answer through nginx ({probe.detail}; {programs}); "
                                  f"logs: {self.paths.log_dir}")
        # Answering is not enough: it must also have stayed up past supervisor's startsecs.
        self.supervisor.wait_running(names, timeout=30)
        return f"{probe.detail} at {desired.url}"

    # -- rollback ----------------------------------------------------------------------------

    def rollback(self, cp: Checkpoint, plan: Plan) -> str:
        with signals_deferred(), self.reporter.step("rollback") as out:
            restored = cp.restore()
            self.resync(plan.restart, started_supervisord=plan.supervisord == "start",
                        started_nginx=plan.nginx == "start")
            summary = f"{len(restored)} file(s) restored" if restored else "no files needed restoring"
            out["text"] = summary
            return summary

    def resync(self, restart: tuple[str, ...] = (), started_supervisord: bool = False, started_nginx: bool = False) -> None:
        """Bring the daemons back in line with the files on disk (after a restore)."""
        errors = []
        sup, nginx = self.supervisor, self.nginx
        try:
            if started_supervisord:
                sup.apply_shutdown()
            elif sup.probe_running():
                sup.apply_update()
                for name in restart:
                    sup.apply_restart(name)
        except DeploykitError as exc:
            errors.append(str(exc))
        except Exception as exc:  # restoring must go on to nginx whatever supervisor said
            errors.append(f"supervisor: {exc}")
        try:
            if started_nginx:
                nginx.apply_stop()
            elif nginx.probe_pid() is not None:
                ok, said = nginx.probe_config()
                if ok:
                    nginx.apply_reload()
                else:
                    errors.append(f"restored nginx config does not validate: {said}")
        except Exception as exc:
            errors.append(f"nginx: {exc}")
        if errors:
            raise OperationFailed("rollback could not fully resync the daemons: " + "; ".join(errors))


def restore_checkpoint(engine: Engine, cp: Checkpoint, programs_for) -> list[Path]:
    """`deploykit rollback`: put back the files as they were before cp's apply, then resync.

    programs_for(restored paths) names the programs whose inputs those files are.
    """
    guard = Checkpoint.begin(engine.paths.checkpoints, f"before rollback to {cp.dir.name}")
    for entry in cp.entries:
        guard.register(Path(entry["path"]))
    try:
        with signals_raise():
            restored = cp.restore()
            engine.resync(tuple(programs_for(set(restored))))
    except (Exception, Interrupted):
        undone = guard.restore()
        engine.resync(tuple(programs_for(set(undone))))
        guard.finish("rolled-back")
        raise
    guard.finish("rollback")
    cp.finish("reverted")
    return restored
