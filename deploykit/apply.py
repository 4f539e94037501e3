"""Apply a desired state safely: plan, checkpoint, write, validate, reload, verify, or roll back.

This is the edge that changes things; the decisions come from the pure plan. Any failure after
the first write (validation, reload, verification, an exception, SIGINT or SIGTERM) restores
the checkpoint and brings the daemons back to the previous configuration before exiting 1.
The rollback undoes exactly what the apply did (Progress): a failure before the reload
restarts nothing, so kernels and open connections are not disturbed by a rejected edit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import sys
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
from deploykit.record import build_record, read_record, recorded_nginx_paths, recorded_paths
from deploykit.supervisor import Supervisor
from deploykit.verify import wait_for_jupyter

# Test-only: DEPLOYKIT_TEST_PAUSE_AFTER=<write|validate|reload|verify> makes an apply stop after
# that stage, say so on stderr, and wait (for a line on stdin, EOF, or PAUSE_LIMIT seconds) so a
# test can send SIGTERM at exactly that point or hold the lock. Operators never set it.
PAUSE_ENV = "DEPLOYKIT_TEST_PAUSE_AFTER"
PAUSE_LIMIT = 120.0


def applied_spec_path(paths: Paths) -> Path:
    return paths.checkpoints / "applied-spec.toml"


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


def test_pause(stage: str) -> None:
    if os.environ.get(PAUSE_ENV) != stage:
        return
    print(f"deploykit test hook: paused after {stage} (pid {os.getpid()})", file=sys.stderr, flush=True)
    try:
        select.select([sys.stdin], [], [], PAUSE_LIMIT)
    except (ValueError, OSError):  # no usable stdin
        pass


@dataclasses.dataclass
class Progress:
    """What an apply has done to the daemons so far: what a rollback has to undo. Each flag is
    set before the action, so an action cut short by a signal is undone too."""

    started_supervisord: bool = False
    updated_supervisor: bool = False      # supervisor's update ran (sections added/changed/removed)
    by_update: set[str] = dataclasses.field(default_factory=set)
    restarted: list[str] = dataclasses.field(default_factory=list)   # restarted or started by name
    started_nginx: bool = False
    reloaded_nginx: bool = False

    @property
    def daemons_touched(self) -> bool:
        return bool(self.started_supervisord or self.updated_supervisor or self.restarted
                    or self.started_nginx or self.reloaded_nginx)


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
        """desired plus deploykit's own bookkeeping files: the record, and a copy of the spec as applied.

        The operator edits deploykit.toml before a reload, so the checkpoint cannot keep the spec
        the running configuration came from; it keeps the previous copy instead, and
        `deploykit rollback` puts that spec back along with the files.
        """
        record = FileSpec(self.paths.record, b"", mode=0o600, kind="record")
        extra = [FileSpec(applied_spec_path(self.paths), f.content, mode=0o600, kind="applied-spec")
                 for f in desired.files if f.kind == "spec"]
        desired = dataclasses.replace(desired, files=desired.files + (*extra, record))
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
        """Read the facts and plan; reads only (`deploykit plan` and --dry-run rely on it)."""
        desired = self.with_record(desired)
        record = read_record(self.paths.record)
        recorded = recorded_paths(record)
        facts = fsio.read_file_facts([*(f.path for f in desired.files), *(s.path for s in desired.symlinks),
                                      *recorded])
        names = {p.name for p in desired.programs} | set(record.get("programs", []))
        return desired, build_plan(desired, facts, recorded, self.read_daemon_facts(names),
                                   recorded_nginx_paths(record))

    # -- apply -------------------------------------------------------------------------------

    def apply(self, desired: DesiredState, plan: Plan, note: str = "") -> list[str]:
        """Carry out plan; on any failure roll back and raise OperationFailed."""
        cp = Checkpoint.begin(self.paths.checkpoints, note)
        progress = Progress()
        done: list[str] = []
        stage = "write"
        try:
            with signals_raise():
                with self.reporter.step("write") as out:
                    self._write(desired, plan, cp)
                    out["text"] = f"{len(plan.changes)} file(s) changed" if plan.changes else "no file changes"
                test_pause("write")
                stage = "validate"
                with self.reporter.step("validate") as out:
                    out["text"] = self._validate(plan)
                test_pause("validate")
                stage = "reload"
                with self.reporter.step("reload") as out:
                    done = self._reload(plan, progress)
                    out["text"] = "; ".join(done) or "nothing to reload"
                test_pause("reload")
                stage = "verify"
                with self.reporter.step("verify") as out:
                    out["text"] = self.verify(desired)
                test_pause("verify")
        except (Exception, Interrupted) as exc:
            what = f"interrupted by {exc} during {stage}" if isinstance(exc, Interrupted) else f"{stage} failed: {exc}"
            try:
                restored = self.rollback(cp, plan, progress)
            except Exception as again:  # the operator must hear both, and where the old files are
                cp.finish("rollback-failed")
                raise OperationFailed(f"{what}\nrollback FAILED ({again}); the files from before this run "
                                      f"are in {cp.dir}") from exc
            cp.finish("rolled-back")
            raise OperationFailed(f"{what}\nrolled back: {restored}") from exc
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

    def _validate(self, plan: Plan) -> str:
        ok, said = self.nginx.probe_config()
        if not ok:
            raise OperationFailed(f"nginx rejected the configuration: {said}")
        if not plan.supervisord and (plan.added or plan.changed or plan.removed):
            # reloadConfig parses the files and reports; it changes nothing that runs.
            self.supervisor.probe_reread()
            return "nginx -t ok, supervisor reread ok"
        return "nginx -t ok"

    def _reload(self, plan: Plan, progress: Progress) -> list[str]:
        done = []
        sup = self.supervisor
        if plan.supervisord == "start":
            progress.started_supervisord = True
            sup.apply_start()
            done.append("supervisord started")
        else:
            if plan.added or plan.changed or plan.removed:
                # What supervisor's update will do: sections whose settings changed, not text.
                added, changed, _ = sup.probe_reread()
                progress.by_update = set(added) | set(changed)
                progress.updated_supervisor = True
                done += sup.apply_update()
            for name in plan.restart:
                if name not in progress.by_update:
                    progress.restarted.append(name)
                    sup.apply_restart(name)
                    done.append(f"restarted {name}")
            for name in plan.start:
                if name not in progress.by_update and name not in progress.restarted:
                    progress.restarted.append(name)
                    sup.apply_start_program(name)
                    done.append(f"started {name}")
        if plan.nginx == "start":
            progress.started_nginx = True
            self.nginx.apply_start()
            done.append("nginx started")
        elif plan.nginx == "reload":
            progress.reloaded_nginx = True
            self.nginx.apply_reload()
            done.append("nginx reloaded")
        return done

    def verify(self, desired: DesiredState, timeout: float | None = None) -> str:
        t = desired.verify
        names = [p.name for p in desired.programs]
        probe = wait_for_jupyter(t.domain, t.port, t.path, t.tls, t.cafile,
                                 timeout=self.verify_timeout if timeout is None else timeout,
                                 give_up=self._crash_watch(names))
        if not probe.ok:
            states = self.supervisor.probe_programs()
            programs = ", ".join(f"{n} {states.get(n, {}).get('state', 'missing')}" for n in
                                 (p.name for p in desired.programs))
            raise OperationFailed(f"{desired.url} did not answer through nginx ({probe.detail}; {programs}); "
                                  f"logs: {self.paths.log_dir}")
        # Answering is not enough: it must also have stayed up past supervisor's startsecs.
        self.supervisor.wait_running(names, timeout=30)
        return f"{probe.detail} at {desired.url}"

    def _crash_watch(self, names: list[str]):
        """give_up for wait_for_jupyter: a program that exits while we wait for it has failed,
        whether supervisor already calls it FATAL or will restart it for ever (a Jupyter that
        dies after startsecs counts as started, so supervisor never gives up on it)."""
        first: dict[str, int] = {}

        def give_up() -> str | None:
            states = self.supervisor.probe_programs()
            for n in names:
                info = states.get(n, {})
                state, pid = info.get("state"), info.get("pid")
                if state == "FATAL":
                    return f"{n} failed to start (FATAL)"
                if state in {"EXITED", "BACKOFF"} or (pid and first.setdefault(n, pid) != pid):
                    return f"{n} exited after it was started (now {state}); see {self.paths.log_dir}"
            return None

        return give_up

    # -- rollback ----------------------------------------------------------------------------

    def rollback(self, cp: Checkpoint, plan: Plan, progress: Progress | None = None) -> str:
        """Restore the files, undo what the apply did to the daemons, and say what was done.

        Without progress (older callers), assume every daemon action of the plan happened.
        """
        if progress is None:
            progress = Progress(started_supervisord=plan.supervisord == "start",
                                updated_supervisor=bool(plan.added or plan.changed or plan.removed),
                                restarted=list(plan.restart), started_nginx=plan.nginx == "start",
                                reloaded_nginx=plan.nginx == "reload")
        with signals_deferred(), self.reporter.step("rollback") as out:
            restored = cp.restore()
            names = ", ".join(p.name for p in restored[:6]) + (", ..." if len(restored) > 6 else "")
            parts = [f"{len(restored)} file(s) restored ({names})" if restored else "no files needed restoring"]
            try:
                parts += self._undo(progress)
            except DeploykitError as exc:
                parts.append(str(exc))
            if progress.daemons_touched and not (progress.started_supervisord or progress.started_nginx):
                parts.append(self._verify_previous())
            summary = "; ".join(parts)
            out["text"] = summary
            return summary

    def _undo(self, progress: Progress) -> list[str]:
        self.resync(tuple(progress.restarted), started_supervisord=progress.started_supervisord,
                    started_nginx=progress.started_nginx, update=progress.updated_supervisor,
                    reload_nginx=progress.reloaded_nginx)
        said = []
        if progress.started_supervisord:
            said.append("supervisord stopped")
        if progress.updated_supervisor and not progress.started_supervisord:
            said.append("supervisor programs back to their previous sections")
        if progress.restarted and not progress.started_supervisord:
            said.append("restarted " + ", ".join(dict.fromkeys(progress.restarted)) + " with the previous configuration")
        if progress.started_nginx:
            said.append("nginx stopped")
        elif progress.reloaded_nginx:
            said.append("nginx reloaded with the previous configuration")
        return said or ["no daemon had been touched"]

    def _verify_previous(self) -> str:
        """After a rollback that touched the daemons: does the previous deployment answer again?
        Its address is the one in the restored record (the failed edit may have changed it)."""
        record = read_record(self.paths.record)
        t = record.get("verify")
        if not t:
            return "the previous deployment was not checked (its record names no address)"
        names = list(record.get("programs", []))
        probe = wait_for_jupyter(t["domain"], t["port"], t["path"], t["tls"], Path(t["cafile"]) if t["cafile"] else None,
                                 timeout=min(self.verify_timeout, 60.0), give_up=self._crash_watch(names))
        if not probe.ok:
            return f"WARNING: the previous deployment does not answer ({probe.detail}); logs: {self.paths.log_dir}"
        try:
            self.supervisor.wait_running(names, timeout=30)
        except DeploykitError as exc:
            return f"WARNING: {exc}"
        return f"the previous deployment answers again ({probe.detail})"

    def resync(self, restart: tuple[str, ...] = (), started_supervisord: bool = False, started_nginx: bool = False,
               update: bool = True, reload_nginx: bool = True) -> None:
        """Bring the daemons back in line with the files on disk (after a restore)."""
        errors = []
        sup, nginx = self.supervisor, self.nginx
        try:
            if started_supervisord:
                sup.apply_shutdown()
            elif sup.probe_running():
                by_update: set[str] = set()
                if update:
                    added, changed, _ = sup.probe_reread()
                    by_update = set(added) | set(changed)
                    sup.apply_update()
                for name in dict.fromkeys(restart):
                    if name not in by_update:
                        sup.apply_restart(name)
        except DeploykitError as exc:
            errors.append(str(exc))
        except Exception as exc:  # restoring must go on to nginx whatever supervisor said
            errors.append(f"supervisor: {exc}")
        try:
            if started_nginx:
                nginx.apply_stop()
            elif reload_nginx and nginx.probe_pid() is not None:
                ok, said = nginx.probe_config()
                if ok:
                    nginx.apply_reload()
                else:
                    errors.append(f"restored nginx config does not validate: {said}")
        except Exception as exc:
            errors.append(f"nginx: {exc}")
        if errors:
            raise OperationFailed("rollback could not fully resync the daemons: " + "; ".join(errors))


def restore_checkpoint(engine: Engine, cp: Checkpoint, programs_for, verify=None) -> list[Path]:
    """`deploykit rollback`: put back the files as they were before cp's apply, then resync.

    programs_for(restored paths) names the programs whose inputs those files are; verify(),
    if given, checks the result. On any failure the files and daemons go back to how they
    were before the rollback, and OperationFailed says so.
    """
    spec, applied = engine.paths.spec, applied_spec_path(engine.paths)
    guard = Checkpoint.begin(engine.paths.checkpoints, f"before rollback to {cp.dir.name}")
    for entry in cp.entries:
        guard.register(Path(entry["path"]))
    guard.register(spec)
    try:
        with signals_raise():
            restored = cp.restore()
            # The spec goes back to the one the restored configuration was applied from.
            before = fsio.read_file_fact(applied)
            if before.content is not None and fsio.read_file_fact(spec).content != before.content:
                fsio.apply_write_atomic(spec, before.content, 0o600)
                restored.append(spec)
            engine.resync(tuple(programs_for(set(restored))))
            if verify is not None:
                verify()
    except (Exception, Interrupted) as exc:
        with signals_deferred():
            undone = guard.restore()
            try:
                engine.resync(tuple(programs_for(set(undone))))
            except DeploykitError as again:
                exc = f"{exc}; and then: {again}"
        guard.finish("rolled-back")
        raise OperationFailed(f"rollback to {cp.dir.name} failed ({exc}); "
                              "the configuration from before the rollback was put back") from None
    guard.finish("rollback")
    cp.finish("reverted")
    return restored
