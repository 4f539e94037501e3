"""The plan is pure: facts in (files on disk, daemons' state), plan out. No host, no daemons.

Data-driven like pyinfra's operation tests: each case names the facts that differ from a
deployment that already matches its spec, and the plan expected from them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from deploykit.desired import DesiredState, FileSpec, Program, Symlink, VerifyTarget
from deploykit.fsio import FileFact
from deploykit.plan import MASK, DaemonFacts, build_plan, render_plan
from deploykit.record import build_record, recorded_nginx_paths, recorded_paths

S = Path("/srv/dk")
HASH = "argon2:$argon2id$v=19$m=10240,t=10,p=8$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
NEW_HASH = "argon2:$argon2id$v=19$m=10240,t=10,p=8$bmV3c2FsdA$bmV3aGFzaG5ld2hhc2g"

SITE = S / "nginx/sites/site.conf"
MAIN = S / "nginx/nginx.conf"
CERT = S / "tls/cert.pem"
KEY = S / "tls/key.pem"
LINK = S / "nginx/enabled/site.conf"
JUPYTER_CONF = S / "supervisor/jupyter.conf"
JUPYTER_PY = S / "jupyter/jupyter_server_config.py"
HASH_FILE = S / "secrets/notebook-password.hash"
PROXY_CONF = S / "supervisor/proxy.conf"
PROXY_JSON = S / "proxy/config.json"
SPEC = S / "deploykit.toml"


def jupyter_py(password_hash: str = HASH, default_url: str = "/lab") -> bytes:
    return (f"c.ServerApp.default_url = '{default_url}'\n"
            f"c.PasswordIdentityProvider.hashed_password = '{password_hash}'\n").encode()


FILES = {
    SPEC: FileSpec(SPEC, b'[deployment]\ndomain = "jupyter.test"\n', 0o600, kind="spec"),
    MAIN: FileSpec(MAIN, b"events {}\nhttp { include sites/*.conf; }\n"),
    SITE: FileSpec(SITE, b"server {\n    listen 443 ssl;\n    client_max_body_size 1g;\n}\n"),
    CERT: FileSpec(CERT, b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", kind="cert"),
    KEY: FileSpec(KEY, b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"
                       b"-----END PRIVATE KEY-----\n", 0o600, secret=True, kind="cert"),
    JUPYTER_CONF: FileSpec(JUPYTER_CONF, b"[program:jupyter]\ncommand=python -m notebook\n"),
    JUPYTER_PY: FileSpec(JUPYTER_PY, jupyter_py(), 0o600),
    HASH_FILE: FileSpec(HASH_FILE, (HASH + "\n").encode(), 0o600, secret=True, kind="secret"),
    PROXY_CONF: FileSpec(PROXY_CONF, b"[program:proxy]\ncommand=proxy\n"),
    PROXY_JSON: FileSpec(PROXY_JSON, b'{"port": 8000}\n'),
}
PROGRAMS = (Program("jupyter", JUPYTER_CONF, (JUPYTER_PY, HASH_FILE)),
            Program("proxy", PROXY_CONF, (PROXY_JSON,)))
NGINX_FILES = (MAIN, SITE, CERT, KEY)
RUNNING = {"jupyter": "RUNNING", "proxy": "RUNNING"}


def make_desired(files=None, programs=PROGRAMS, symlinks=()) -> DesiredState:
    return DesiredState(files=tuple((files or FILES).values()), dirs=(), programs=programs, symlinks=symlinks,
                        url="https://jupyter.test/",
                        verify=VerifyTarget("jupyter.test", 443, "/api", True, CERT), nginx_files=NGINX_FILES)


def matching_facts(desired: DesiredState) -> dict[Path, FileFact]:
    facts = {f.path: FileFact(f.content, f.mode, 0, 0) for f in desired.files}
    facts.update({s.path: FileFact(None, symlink_to=str(s.target)) for s in desired.symlinks})
    return facts


def replaced(path: Path, content: bytes) -> dict:
    return {**FILES, path: dataclasses.replace(FILES[path], content=content)}


@dataclasses.dataclass
class Case:
    id: str
    desired: DesiredState = dataclasses.field(default_factory=make_desired)
    disk: dict = dataclasses.field(default_factory=dict)       # path -> FileFact overriding "matches"
    recorded: tuple = ()                                        # extra recorded paths
    recorded_nginx: set | None = dataclasses.field(default_factory=set)
    daemons: DaemonFacts = DaemonFacts(True, True, RUNNING)
    expect: dict = dataclasses.field(default_factory=dict)      # Plan field -> value; others empty
    actions: list | None = None                                 # Plan.actions(), when checked


OLD_SITE = FileFact(b"server {\n    listen 443 ssl;\n    client_max_body_size 2m;\n}\n", 0o644, 0, 0)
EMPTY = dict(changes=[], nginx=None, supervisord=None, added=(), changed=(), removed=(), restart=(), start=())

CASES = [
    Case("no-change", actions=[]),
    Case("fresh-host", disk={p: FileFact(None) for p in FILES},
         daemons=DaemonFacts(False, False, {}),
         expect=dict(changes=[("create", p) for p in FILES], nginx="start", supervisord="start",
                     added=("jupyter", "proxy")),
         actions=["supervisor: start supervisord", "supervisor: start jupyter (added)",
                  "supervisor: start proxy (added)", "nginx: start"]),
    Case("supervisord-down-files-fine", daemons=DaemonFacts(True, False, {}),
         expect=dict(supervisord="start", added=("jupyter", "proxy"))),
    Case("nginx-down", daemons=DaemonFacts(False, True, RUNNING), expect=dict(nginx="start"),
         actions=["nginx: start"]),
    Case("site-edit-reloads-nginx-only", disk={SITE: OLD_SITE},
         expect=dict(changes=[("update", SITE)], nginx="reload"), actions=["nginx: reload"]),
    Case("certificate-renewed-reloads-nginx", disk={CERT: FileFact(b"old cert\n", 0o644, 0, 0)},
         expect=dict(changes=[("update", CERT)], nginx="reload")),
    Case("key-mode-only-no-reload", disk={KEY: FileFact(FILES[KEY].content, 0o644, 0, 0)},
         expect=dict(changes=[("mode", KEY)])),
    Case("program-section-changed-only-that-program",
         disk={JUPYTER_CONF: FileFact(b"[program:jupyter]\ncommand=old\n", 0o644, 0, 0)},
         expect=dict(changes=[("update", JUPYTER_CONF)], changed=("jupyter",)),
         actions=["supervisor: restart jupyter (changed)"]),
    Case("program-input-changed-restarts-that-program",
         disk={PROXY_JSON: FileFact(b'{"port": 7000}\n', 0o644, 0, 0)},
         expect=dict(changes=[("update", PROXY_JSON)], restart=("proxy",)),
         actions=["supervisor: restart proxy (its configuration changed)"]),
    Case("section-and-input-changed-one-restart",
         disk={JUPYTER_CONF: FileFact(b"old\n", 0o644, 0, 0), JUPYTER_PY: FileFact(b"old\n", 0o600, 0, 0)},
         expect=dict(changes=[("update", JUPYTER_CONF), ("update", JUPYTER_PY)], changed=("jupyter",),
                     restart=("jupyter",)),
         actions=["supervisor: restart jupyter (changed)"]),
    Case("password-changed-restarts-jupyter",
         desired=make_desired(replaced(HASH_FILE, (NEW_HASH + "\n").encode()) | {
             JUPYTER_PY: dataclasses.replace(FILES[JUPYTER_PY], content=jupyter_py(NEW_HASH))}),
         disk={HASH_FILE: FileFact((HASH + "\n").encode(), 0o600, 0, 0), JUPYTER_PY: FileFact(jupyter_py(), 0o600, 0, 0)},
         expect=dict(changes=[("update", JUPYTER_PY), ("update", HASH_FILE)], restart=("jupyter",))),
    Case("program-not-running-is-started", daemons=DaemonFacts(True, True, {**RUNNING, "proxy": "FATAL"}),
         expect=dict(start=("proxy",)), actions=["supervisor: start proxy (not running)"]),
    Case("program-added", daemons=DaemonFacts(True, True, {"jupyter": "RUNNING"}), expect=dict(added=("proxy",))),
    Case("program-removed", desired=make_desired({k: v for k, v in FILES.items() if k not in (PROXY_CONF, PROXY_JSON)},
                                                 programs=PROGRAMS[:1]),
         recorded=(PROXY_CONF, PROXY_JSON),
         disk={PROXY_CONF: FileFact(b"[program:proxy]\n", 0o644, 0, 0), PROXY_JSON: FileFact(b"{}", 0o644, 0, 0)},
         expect=dict(changes=[("delete", PROXY_CONF), ("delete", PROXY_JSON)], removed=("proxy",)),
         actions=["supervisor: stop proxy (removed)"]),
    Case("recorded-nginx-file-deleted-reloads-nginx", recorded=(S / "nginx/sites/old.conf",),
         recorded_nginx={S / "nginx/sites/old.conf"},
         disk={S / "nginx/sites/old.conf": FileFact(b"server {}\n", 0o644, 0, 0)},
         expect=dict(changes=[("delete", S / "nginx/sites/old.conf")], nginx="reload")),
    Case("recorded-other-file-deleted-no-reload", recorded=(S / "jupyter/old.py",),
         recorded_nginx={S / "nginx/sites/old.conf"},
         disk={S / "jupyter/old.py": FileFact(b"x\n", 0o644, 0, 0)},
         expect=dict(changes=[("delete", S / "jupyter/old.py")])),
    Case("deleted-file-old-record-reloads-to-be-safe", recorded=(S / "jupyter/old.py",), recorded_nginx=None,
         disk={S / "jupyter/old.py": FileFact(b"x\n", 0o644, 0, 0)},
         expect=dict(changes=[("delete", S / "jupyter/old.py")], nginx="reload")),
    Case("recorded-file-already-gone-no-change", recorded=(S / "jupyter/old.py",),
         disk={S / "jupyter/old.py": FileFact(None)}),
    Case("site-link-missing-reloads-nginx", desired=make_desired(symlinks=(Symlink(LINK, SITE),)),
         disk={LINK: FileFact(None)}, expect=dict(changes=[("link", LINK)], nginx="reload")),
    Case("spec-comment-only-changes-nothing-that-runs", disk={SPEC: FileFact(b"# old comment\n", 0o600, 0, 0)},
         expect=dict(changes=[("update", SPEC)])),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_from_facts(case: Case):
    facts = matching_facts(case.desired) | case.disk
    recorded = [*(f.path for f in case.desired.files), *case.recorded]
    plan = build_plan(case.desired, facts, recorded, case.daemons, case.recorded_nginx)
    expected = EMPTY | case.expect
    got = {name: getattr(plan, name) for name in EMPTY}
    got["changes"] = sorted((c.action, c.path) for c in plan.changes)
    expected["changes"] = sorted(expected["changes"])
    assert got == expected
    assert plan.empty == (expected == EMPTY)
    if case.actions is not None:
        assert plan.actions() == case.actions


def test_no_changes_says_why():
    desired = make_desired()
    plan = build_plan(desired, matching_facts(desired), [f.path for f in desired.files],
                      DaemonFacts(True, True, RUNNING), set())
    text = render_plan(plan)
    assert text.startswith("no changes: ")
    assert f"{len(FILES)} files already match the spec" in text
    assert "jupyter, proxy" in text
    assert text.count("\n") == 1


def test_render_is_a_unified_diff_then_the_actions():
    desired = make_desired()
    plan = build_plan(desired, matching_facts(desired) | {SITE: OLD_SITE}, [], DaemonFacts(True, True, RUNNING), set())
    assert render_plan(plan) == (
        f"--- a{SITE}\n+++ b{SITE}\n@@ -1,4 +1,4 @@\n server {{\n     listen 443 ssl;\n"
        "-    client_max_body_size 2m;\n+    client_max_body_size 1g;\n }\n"
        "nginx: reload\n")


def test_render_never_shows_secrets():
    """Secret files are named, never shown; their values inside other files are masked."""
    desired = make_desired(replaced(HASH_FILE, (NEW_HASH + "\n").encode()) | {
        JUPYTER_PY: dataclasses.replace(FILES[JUPYTER_PY], content=jupyter_py(NEW_HASH, "/tree"))})
    facts = matching_facts(desired) | {HASH_FILE: FileFact((HASH + "\n").encode(), 0o600, 0, 0),
                                       JUPYTER_PY: FileFact(jupyter_py(), 0o600, 0, 0),
                                       KEY: FileFact(b"-----BEGIN PRIVATE KEY-----\nOLDKEYOLDKEYOLDKEY\n", 0o600, 0, 0)}
    plan = build_plan(desired, facts, [], DaemonFacts(True, True, RUNNING), set())
    text = render_plan(plan)
    assert "-c.ServerApp.default_url = '/lab'" in text and "+c.ServerApp.default_url = '/tree'" in text
    assert f"hashed_password = '{MASK}'" in text
    for secret in (HASH, NEW_HASH, "c2FsdHNhbHQ", "OLDKEYOLDKEYOLDKEY", "MIGHAgEAMBMGByqGSM49"):
        assert secret not in text
    assert f"changed {HASH_FILE} (secret or binary content not shown)" in text
    assert f"changed {KEY} (secret or binary content not shown)" in text
    assert "supervisor: restart jupyter (its configuration changed)" in text
    assert "nginx: reload" in text


def test_render_mode_link_delete_and_record_lines():
    desired = make_desired(symlinks=(Symlink(LINK, SITE),))
    record_path = S / "files.json"
    desired = dataclasses.replace(desired, files=desired.files + (FileSpec(record_path, b"{}\n", 0o600, kind="record"),))
    facts = matching_facts(desired) | {LINK: FileFact(None), KEY: FileFact(FILES[KEY].content, 0o644, 0, 0),
                                       record_path: FileFact(b"{ }\n", 0o600, 0, 0),
                                       S / "old.conf": FileFact(b"x\n", 0o644, 0, 0)}
    plan = build_plan(desired, facts, [S / "old.conf"], DaemonFacts(True, True, RUNNING), {S / "old.conf"})
    text = render_plan(plan)
    assert f"mode {KEY}: 644 -> 600\n" in text
    assert f"link {LINK} -> {SITE}\n" in text
    assert f"removed {S / 'old.conf'} (secret or binary content not shown)\n" in text
    assert f"changed {record_path} (deploykit's record of the files it wrote)\n" in text
    assert text.endswith("nginx: reload\n")


def test_record_round_trip_names_nginx_inputs_and_the_address():
    import json

    desired = make_desired(symlinks=(Symlink(LINK, SITE),))
    record = json.loads(build_record(desired, S / "files.json"))
    assert recorded_nginx_paths(record) == {MAIN, SITE, CERT, KEY, LINK}
    assert set(recorded_paths(record)) == {*FILES, S / "files.json", LINK}
    assert record["programs"] == ["jupyter", "proxy"]
    assert record["verify"] == {"domain": "jupyter.test", "port": 443, "path": "/api", "tls": True, "cafile": str(CERT)}
    assert recorded_nginx_paths({"files": []}) is None


def test_apply_adds_the_record_and_a_copy_of_the_applied_spec(tmp_path):
    """The spec as applied is kept beside the record: the checkpoint holds the previous copy
    (the operator edits deploykit.toml before a reload), which `deploykit rollback` puts back."""
    import json

    from deploykit.apply import Engine, applied_spec_path
    from deploykit.display import Reporter
    from deploykit.paths import local_paths

    paths = local_paths(tmp_path / "state")
    spec = FileSpec(paths.spec, b'[deployment]\ndomain = "jupyter.test"\n', 0o600, kind="spec")
    desired = Engine(paths, host=None, reporter=Reporter(quiet=True)).with_record(
        dataclasses.replace(make_desired(), files=(spec,)))
    by_path = {f.path: f for f in desired.files}
    assert by_path[applied_spec_path(paths)].content == spec.content
    assert by_path[applied_spec_path(paths)].mode == 0o600
    record = json.loads(by_path[paths.record].content)
    assert {f["path"]: f["kind"] for f in record["files"]} == {
        str(paths.spec): "spec", str(applied_spec_path(paths)): "applied-spec", str(paths.record): "record"}
    assert list(tmp_path.iterdir()) == []
