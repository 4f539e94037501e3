"""Reading and writing files: the only place deploykit's own file writes happen.

Writes are atomic (temp file in the same directory, fsync, rename, fsync of the directory) and
land with their final mode and owner, so a reader (nginx, supervisord) never sees half a file
and a secret is never briefly world-readable.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import stat
import tempfile
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class FileFact:
    content: bytes | None     # None: missing
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    symlink_to: str | None = None

    @property
    def exists(self) -> bool:
        return self.content is not None or self.symlink_to is not None


MISSING = FileFact(None)


def read_file_fact(path: Path) -> FileFact:
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return MISSING
    if stat.S_ISLNK(st.st_mode):
        return FileFact(None, symlink_to=os.readlink(path))
    if not stat.S_ISREG(st.st_mode):
        return FileFact(b"", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return FileFact(Path(path).read_bytes(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def read_file_facts(paths) -> dict[Path, FileFact]:
    return {Path(p): read_file_fact(Path(p)) for p in paths}


def resolve_owner(owner: str | None, group: str | None = None) -> tuple[int, int]:
    """uid, gid for a user (and group) name; -1 keeps the current one."""
    uid = gid = -1
    if owner:
        entry = pwd.getpwnam(owner)
        uid, gid = entry.pw_uid, entry.pw_gid
    if group:
        gid = grp.getgrnam(group).gr_gid
    return uid, gid


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def apply_write_atomic(path: Path, content: bytes, mode: int = 0o644, owner: str | None = None,
                       group: str | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        uid, gid = resolve_owner(owner, group)
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def apply_symlink(path: Path, target: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-link"
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    os.symlink(target, tmp)
    os.replace(tmp, path)


def apply_remove(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def ensure_dir(path: Path, mode: int = 0o700, owner: str | None = None) -> bool:
    """Create the directory (and parents) if missing, then set its mode. True if it was created."""
    path = Path(path)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != mode:
        os.chmod(path, mode)
    uid, gid = resolve_owner(owner)
    if uid != -1:
        os.chown(path, uid, gid)
    return created
