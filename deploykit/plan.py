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

# Secret values shorter than this are not masked in diffs: they would mask ordinary words.
MIN_MASKED = 12
MASK = "<secret>"
# deploykit's own files: one line each in a plan, not a diff.
BOOKKEEPING = {"record": "deploykit's record of the files it wrote",
               "applied-spec": "copy of the spec as applied, for `deploykit rollback`"}


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
    kind: str = "config"


@dataclasses.dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    nginx: str | None                 # start | reload | None
    supervisord: str | None           # start | None
    added: tuple[str, ...]            # program sections that are new
    changed: tuple[str, ...]          # program sections whose text changed (supervisor's update restarts them)
    removed: tuple[str, ...]          # program sections no longer wanted
    restart: tuple[str, ...]          # programs whose inputs (config files, secrets) changed
    start: tuple[str, ...]            # programs that should run but do not
    reasons: tuple[str, ...] = ()     # why nothing needs doing, when empty
    # Secret values that may appear inside non-secret files (a password hash in Jupyter's
    # config): render_plan masks them.
    masked: tuple[str, ...] = dataclasses.field(default=(), repr=False)

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
        out += [f"supervisor: restart {n} (its configuration changed)" for n in self.restart
                if n not in self.changed]
        out += [f"supervisor: start {n} (not running)" for n in self.start
                if n not in self.changed and n not in self.restart]
        if self.nginx:
            out.append(f"nginx: {self.nginx}")
        return out


def diff_files(desired: DesiredState, facts: dict[Path, FileFact], recorded: list[Path]) -> list[Change]:
    changes = []
    for f in desired.files:
        fact = facts.get(f.path)
        if fact is None or not fact.exists:
            changes.append(Change(f.path, "create", None, f.content, f.mode, secret=f.secret, kind=f.kind))
        elif fact.content != f.content:
            changes.append(Change(f.path, "update", fact.content, f.content, f.mode, fact.mode, secret=f.secret,
                                  kind=f.kind))
        elif fact.mode != f.mode:
            changes.append(Change(f.path, "mode", mode=f.mode, old_mode=fact.mode, secret=f.secret, kind=f.kind))
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


def nginx_inputs(desired: DesiredState) -> set[Path]:
    """Paths nginx reads: its config files, the certificate and key, and links to them."""
    inputs = set(desired.nginx_files)
    inputs |= {s.path for s in desired.symlinks if s.target in inputs}
    return inputs


def secret_values(desired: DesiredState, facts: dict[Path, FileFact]) -> tuple[str, ...]:
    values = set()
    for f in desired.files:
        if not f.secret:
            continue
        fact = facts.get(f.path)
        for data in (f.content, fact.content if fact is not None else None):
            if not data:
                continue
            for line in data.decode(errors="replace").splitlines():
                if len(line.strip()) >= MIN_MASKED:
                    values.add(line.strip())
    # Longest first, so a value containing another is masked whole.
    return tuple(sorted(values, key=lambda s: (-len(s), s)))


def build_plan(desired: DesiredState, facts: dict[Path, FileFact], recorded: list[Path],
               daemons: DaemonFacts, recorded_nginx: set[Path] | None = None) -> Plan:
    """recorded: every path the previous apply wrote; recorded_nginx: which of them nginx read
    (None when the record does not say: then any deleted file is taken to be nginx's, since an
    unneeded graceful reload costs nothing and a missed one leaves nginx serving a stale config).
    """
    changes = diff_files(desired, facts, recorded)
    content_changed = {c.path for c in changes if c.action in {"create", "update", "delete", "link"}}
    deleted = {c.path for c in changes if c.action == "delete"}

    added, changed, restart, start = [], [], [], []
    for program in desired.programs:
        state = daemons.programs.get(program.name)
        if state is None:
            added.append(program.name)
            continue
        # A section edit only restarts the program if supervisor finds its settings changed
        # (a comment does not count), so changed inputs are listed as a restart as well.
        if program.conf in content_changed:
            changed.append(program.name)
        if content_changed & set(program.depends_on):
            restart.append(program.name)
        if state not in {"RUNNING", "STARTING"}:
            start.append(program.name)
    desired_names = {p.name for p in desired.programs}
    removed = sorted(n for n in daemons.programs if n not in desired_names)

    nginx = None
    deleted_nginx = deleted if recorded_nginx is None else deleted & set(recorded_nginx)
    if not daemons.nginx_running:
        nginx = "start"
    elif content_changed & nginx_inputs(desired) or deleted_nginx:
        nginx = "reload"
    supervisord = None if daemons.supervisord_running else "start"
    if supervisord:
        # A fresh supervisord starts every program from its files; nothing to add by hand.
        added, changed, restart, start, removed = [p.name for p in desired.programs], [], [], [], []
    reasons: tuple[str, ...] = ()
    if not (changes or nginx or supervisord or added or changed or removed or restart or start):
        reasons = (f"{len(desired.files)} files already match the spec",
                   "nginx running with this configuration",
                   "supervisor programs running: " + ", ".join(sorted(desired_names)))
    return Plan(tuple(changes), nginx, supervisord, tuple(added), tuple(changed), tuple(removed),
                tuple(restart), tuple(start), reasons, secret_values(desired, facts))


def _text(data: bytes | None) -> list[str]:
    if data is None:
        return []
    try:
        return data.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        return ["(binary content)\n"]


def _mask(line: str, masked: tuple[str, ...]) -> str:
    for value in masked:
        if value in line:
            line = line.replace(value, MASK)
    return line


def render_plan(plan: Plan) -> str:
    """A unified diff of every file that would change, then the daemon actions, or "no changes"."""
    if plan.empty:
        return "no changes: " + "; ".join(plan.reasons) + "\n"
    out = []
    for c in plan.changes:
        label = str(c.path)
        verb = {"create": "new", "update": "changed", "delete": "removed"}.get(c.action, c.action)
        if c.action == "mode":
            out.append(f"mode {label}: {c.old_mode:o} -> {c.mode:o}\n")
        elif c.action == "link":
            out.append(f"link {label} -> {c.new.decode()}\n")
        elif c.kind in BOOKKEEPING:
            out.append(f"{verb} {label} ({BOOKKEEPING[c.kind]})\n")
        elif c.secret:
            out.append(f"{verb} {label} (secret or binary content not shown)\n")
        else:
            old = "/dev/null" if c.action == "create" else f"a{label}"
            new = "/dev/null" if c.action == "delete" else f"b{label}"
            diff = difflib.unified_diff(_text(c.old), _text(c.new), old, new)
            out.append("".join(_mask(line if line.endswith("\n") else line + "\n", plan.masked)
                               for line in diff))
    out += [a + "\n" for a in plan.actions()]
    return "".join(out)
