"""The record of every file deploykit wrote (<state dir>/files.json): `deploykit files` shows it,
`uninstall` removes what it lists, and a later apply deletes files that are no longer wanted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from deploykit.desired import DesiredState
from deploykit.plan import nginx_inputs


def build_record(desired: DesiredState, record_path: Path) -> bytes:
    files = [{"path": str(f.path), "kind": f.kind, "mode": f"{f.mode:04o}", "owner": f.owner,
              "sha256": hashlib.sha256(f.content).hexdigest()} for f in desired.files if f.path != record_path]
    files.append({"path": str(record_path), "kind": "record", "mode": "0600", "owner": None, "sha256": None})
    data = {
        "files": sorted(files, key=lambda x: x["path"]),
        "links": [{"path": str(s.path), "target": str(s.target)} for s in desired.symlinks],
        "dirs": [{"path": str(d.path), "mode": f"{d.mode:04o}"} for d in desired.dirs],
        "programs": sorted(p.name for p in desired.programs),
        # Which of these nginx reads: deleting one of them later means nginx must reload.
        "nginx_files": sorted(str(p) for p in nginx_inputs(desired)),
        # Where this configuration answers: a rollback checks that the restored one does again.
        "url": desired.url,
        "verify": None if desired.verify is None else {
            "domain": desired.verify.domain, "port": desired.verify.port, "path": desired.verify.path,
            "tls": desired.verify.tls, "cafile": str(desired.verify.cafile) if desired.verify.cafile else None},
    }
    return (json.dumps(data, indent=1) + "\n").encode()


def read_record(record_path: Path) -> dict:
    try:
        return json.loads(Path(record_path).read_text())
    except (FileNotFoundError, ValueError):
        return {"files": [], "links": [], "dirs": [], "programs": []}


def recorded_nginx_paths(record: dict) -> set[Path] | None:
    """The recorded paths nginx reads, or None for a record written before this was kept."""
    if "nginx_files" not in record:
        return None
    return {Path(p) for p in record["nginx_files"]}


def recorded_paths(record: dict) -> list[Path]:
    return [Path(f["path"]) for f in record.get("files", [])] + [Path(s["path"]) for s in record.get("links", [])]
