"""Checkpoints: every file is registered before it is touched, so any failure can be undone.

After certbot's reverter: an existing file is copied (content, mode, owner) into the
checkpoint before it is changed; a new file is listed, so restoring deletes it. The manifest
is saved after every registration, so even a run killed outright leaves a checkpoint that
`deploykit rollback` can restore. A finished apply marks its checkpoint done; the newest done
one is what `deploykit rollback` returns to.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from deploykit import fsio

KEEP = 5


class Checkpoint:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.entries: list[dict] = []
        self.state = "in-progress"
        self.note = ""

    @classmethod
    def begin(cls, root: Path, note: str = "") -> "Checkpoint":
        fsio.ensure_dir(root, 0o700)
        # UTC and a zero-padded counter: names sort in the order the checkpoints were made.
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        n = 0
        while (root / f"{stamp}-{n:03d}").exists():
            n += 1
        cp = cls(root / f"{stamp}-{n:03d}")
        fsio.ensure_dir(cp.dir / "files", 0o700)
        cp.note = note
        cp._save()
        return cp

    @classmethod
    def load(cls, directory: Path) -> "Checkpoint":
        data = json.loads((Path(directory) / "manifest.json").read_text())
        cp = cls(directory)
        cp.entries, cp.state, cp.note = data["entries"], data["state"], data.get("note", "")
        return cp

    def _save(self) -> None:
        manifest = {"state": self.state, "note": self.note, "entries": self.entries}
        fsio.apply_write_atomic(self.dir / "manifest.json", json.dumps(manifest, indent=1).encode(), 0o600)

    def registered(self, path: Path) -> bool:
        return any(e["path"] == str(path) for e in self.entries)

    def register(self, path: Path) -> None:
        path = Path(path)
        if self.registered(path):
            return
        fact = fsio.read_file_fact(path)
        entry = {"path": str(path), "existed": fact.exists}
        if fact.symlink_to is not None:
            entry["symlink_to"] = fact.symlink_to
        elif fact.exists:
            backup = self.dir / "files" / str(len(self.entries))
            shutil.copyfile(path, backup)
            os.chmod(backup, 0o600)
            entry.update(backup=str(backup), mode=fact.mode, uid=fact.uid, gid=fact.gid)
        self.entries.append(entry)
        self._save()

    def created(self, path: Path) -> bool:
        """Whether path did not exist before this checkpoint's apply (it made it)."""
        return any(e["path"] == str(path) and not e["existed"] for e in self.entries)

    def paths(self) -> list[Path]:
        return [Path(e["path"]) for e in self.entries]

    def restore(self) -> list[Path]:
        """Put every registered file back as it was; return the paths that were restored or removed."""
        touched = []
        for entry in reversed(self.entries):
            path = Path(entry["path"])
            current = fsio.read_file_fact(path)
            if not entry["existed"]:
                if current.exists:
                    fsio.apply_remove(path)
                    touched.append(path)
            elif "symlink_to" in entry:
                if current.symlink_to != entry["symlink_to"]:
                    fsio.apply_symlink(path, Path(entry["symlink_to"]))
                    touched.append(path)
            else:
                content = Path(entry["backup"]).read_bytes()
                if current.content != content or current.mode != entry["mode"]:
                    fsio.apply_write_atomic(path, content, entry["mode"])
                    touched.append(path)
                if (current.uid, current.gid) != (entry["uid"], entry["gid"]):
                    os.chown(path, entry["uid"], entry["gid"])
        return touched

    def finish(self, state: str = "done") -> None:
        self.state = state
        self._save()


def list_checkpoints(root: Path, state: str | None = None) -> list[Checkpoint]:
    if not Path(root).is_dir():
        return []
    out = []
    for d in sorted(Path(root).iterdir()):
        if (d / "manifest.json").is_file():
            cp = Checkpoint.load(d)
            if state is None or cp.state == state:
                out.append(cp)
    return out


def apply_prune(root: Path, keep: int = KEEP) -> None:
    for cp in list_checkpoints(root)[:-keep]:
        shutil.rmtree(cp.dir, ignore_errors=True)
