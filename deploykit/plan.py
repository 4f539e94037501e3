"""The plan: what must change on disk and in the daemons to reach the desired state.

Pure: build_plan compares the desired state with facts read from disk and the daemons
(passed in), and render_plan turns a plan into text. Like pyinfra's operations, an empty
plan says why nothing needs doing.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

from deploykit.desired import DesiredState
from deploykit.fsio import FileFact


@dataclasses.dataclass(frozen=True)
class DaemonFacts:
    nginx_running: bool
    supervisord_running: bool
    programs: dict[str, str]          # name -> supervisor state name


@dataclasses.dataclass(frozen=True)
class Change:
    path: Path
    action: str                       # create | update | mode | delete | link
    old: bytes | None = None
    new: bytes | None = None
    mode: int | None = None
    old_mode: int | None = None
    secret: bool = False


@dataclasses.dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    nginx: str | None                 # start | reload | None
    supervisord: str | None           # start | None
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    restart: tuple[str, ...]          # unchanged program sections whose inputs changed
    start: tuple[str, ...]            # programs that should run but do not
    reasons: tuple[str, ...] = ()     # why nothing needs doing, when empty

    @property
    def empty(self) -> bool:
        return not (self.changes or self.nginx or self.supervisord or self.added or self.changed
                    or self.removed or self.restart or self.start)

    def actions(self) -> list[str]:
        out = []
        if self.supervisord:
            out.append(f"supervisor: {self.supervisord} supervisord")
        out += [f"supervisor: start {n} (added)" for n in self.added]
        out += [f"supervisor: restart {n} (changed)" for n in self.changed]
        out += [f"supervisor: stop {n} (removed)" for n in self.removed]
        out += [f"supervisor: restart {n} (its configuration changed)" for n in self.restart]
        out += [f"supervisor: start {n} (not running)" for n in self.start]
        if self.nginx:
            out.append(f"nginx: {self.nginx}")
        return out


def diff_files(desired: DesiredState, facts: dict[Path, FileFact], recorded: list[Path]) -> list[Change]:
    changes = []
    for f in desired.files:
        fact = facts.get(f.path)
        if fact is None or not fact.exists:
            changes.append(Change(f.path, "create", None, f.content, f.mode, secret=f.secret))
        elif fact.content != f.content:
            changes.append(Change(f.path, "update", fact.content, f.content, f.mode, fact.mode, secret=f.secret))
        elif fact.mode != f.mode:
            changes.append(Change(f.path, "mode", mode=f.mode, old_mode=fact.mode, secret=f.secret))
    for link in desired.symlinks:
        fact = facts.get(link.path)
        if fact is None or fact.symlink_to != str(link.target):
            changes.append(Change(link.path, "link", new=str(link.target).encode()))
    wanted = {f.path for f in desired.files} | {s.path for s in desired.symlinks}
    for path in recorded:
        if path not in wanted:
            fact = facts.get(path)
            if fact is not None and fact.exists:
                changes.append(Change(path, "delete", fact.content, None, secret=True))
    return changes


def build_plan(desired: DesiredState, facts: dict[Path, FileFact], recorded: list[Path],
               daemons: DaemonFacts) -> Plan:
    changes = diff_files(desired, facts, recorded)
    changed_paths = {c.path for c in changes}
    content_changed = {c.path for c in changes if c.action in {"create", "update", "delete", "link"}}

    added, changed, restart, start = [], [], [], []
    for program in desired.programs:
        state = daemons.programs.get(program.name)
        if state is None:
            added.append(program.name)
        elif program.conf in content_changed:
            changed.append(program.name)
        elif content_changed & set(program.depends_on):
            restart.append(program.name)
        elif state not in {"RUNNING", "STARTING"}:
            start.append(program.name)
    desired_names = {p.name for p in desired.programs}
    removed = sorted(n for n in daemons.programs if n not in desired_names)

    nginx = None
    if not daemons.nginx_running:
        nginx = "start"
    elif content_changed & set(desired.nginx_files) or any(
            c.action == "delete" and c.path.suffix == ".conf" and "nginx" in str(c.path) for c in changes):
        nginx = "reload"
    supervisord = None if daemons.supervisord_running else "start"
    if supervisord:
        # A fresh supervisord starts every program from its files; nothing to add by hand.
        added, changed, restart, start = [p.name for p in desired.programs], [], [], []
    reasons = ()
    if not (changes or nginx or supervisord or added or changed or removed or restart or start):
        reasons = (f"{len(desired.files)} files already match the spec",
                   f"nginx running with this configuration",
                   "supervisor programs running: " + ", ".join(sorted(desired_names)))
    return Plan(tuple(changes), nginx, supervisord, tuple(added), tuple(changed), tuple(removed),
                tuple(restart), tuple(start), reasons)


def _text(data: bytes | None) -> list[str]:
    if data is None:
        return []
    try:
        return data.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        return ["(binary content)\n"]


def render_plan(plan: Plan) -> str:
    """A unified diff of every file that would change, then the daemon actions, or "no changes"."""
    if plan.empty:
        return "no changes: " + "; ".join(plan.reasons) + "\n"
    out = []
    for c in plan.changes:
        label = str(c.path)
        if c.action == "mode":
            out.append(f"mode {label}: {c.old_mode:o} -> {c.mode:o}\n")
        elif c.action == "link":
            out.append(f"link {label} -> {c.new.decode()}\n")
        elif c.secret:
            verb = {"create": "new", "update": "changed", "delete": "removed"}[c.action]
            out.append(f"{verb} {label} (secret or binary content not shown)\n")
        else:
            old = "/dev/null" if c.action == "create" else f"a{label}"
            new = "/dev/null" if c.action == "delete" else f"b{label}"
            diff = difflib.unified_diff(_text(c.old), _text(c.new), old, new)
            out.append("".join(line if line.endswith("\n") else line + "\n" for line in diff))
    out += [a + "\n" for a in plan.actions()]
    return "".join(out)
