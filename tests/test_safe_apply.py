"""Issue 5: safe apply with the real daemons (nginx, supervisord, Jupyter) on loopback.

plan changes nothing; a second provision writes and reloads nothing; a rejected edit, a failed
verify and SIGTERM mid-apply all leave the previous deployment serving; reloads under load drop
no request; only the program whose settings changed restarts; concurrent runs do not
interleave; rollback returns to the previous checkpoint; uninstall removes exactly the record.

Most tests share the module's deployment (conftest's `notebook`) and put its spec back after.
"""

from __future__ import annotations

import hashlib
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support import (PASSWORD, clean_env, dk, execute, free_ports, login, processes_mentioning, provision,
                     run_on_socket, start_https_load, start_kernel, wait_until, xsrf_headers)

from deploykit.checkpoint import list_checkpoints
from deploykit.paths import local_paths
from deploykit.spec import dump_spec, parse_spec
from deploykit.supervisor import Supervisor
from deploykit.verify import probe_http, probe_jupyter_api

pytestmark = pytest.mark.real

# Daemons' and deploykit's working state, and Jupyter's own files (its migration marker, data
# dir): not "files deploykit wrote" for these comparisons.
WORKING = ("logs", "run", "checkpoints", ".lock", "jupyter/migrated", "jupyter/data")


# -- helpers --------------------------------------------------------------------------------

def snapshot(state_dir: Path, skip=WORKING, stat=False) -> dict:
    """path -> (mode, sha256[, inode, mtime]) for every file under state_dir outside skip."""
    out = {}
    for p in sorted(Path(state_dir).rglob("*")):
        rel = p.relative_to(state_dir)
        if any(str(rel) == x or str(rel).startswith(x + "/") for x in skip):
            continue
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else None
        out[str(rel)] = (st.st_mode, digest) + ((st.st_ino, st.st_mtime_ns) if stat and digest else ())
    return out


def children(pid: int) -> list[int]:
    try:
        return sorted(int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return []


def daemon_pids(dep) -> dict:
    paths = local_paths(dep.state_dir)
    master = int(paths.nginx_pid.read_text())
    return {"supervisord": int(paths.supervisord_pid.read_text()),
            "programs": {n: i["pid"] for n, i in Supervisor(paths).probe_programs().items()},
            "nginx": master, "nginx_workers": children(master)}


def edit_spec(dep, **sections) -> None:
    """Change keys of the deployment's spec the way an operator would (then `reload`)."""
    path = dep.state_dir / "deploykit.toml"
    path.write_text(dump_spec(parse_spec(path.read_text()).with_values(sections)))


def site_conf(dep) -> str:
    return (dep.state_dir / "nginx/sites/deploykit.conf").read_text()


def step(stdout: str, name: str) -> str | None:
    """What a progress line said for a step ("  reload     nginx reloaded (0.02 s)" -> "nginx reloaded")."""
    for line in stdout.splitlines():
        if line.startswith(f"  {name} "):
            return line[2 + 10:].rsplit(" (", 1)[0].strip()
    return None


def api_ok(dep) -> bool:
    return probe_jupyter_api(dep.domain, dep.https_port, dep.base_url + "api", True, dep.cert).ok


class Lines:
    """A subprocess stream read line by line in a thread, so a test can wait (bounded) for a line."""

    def __init__(self, stream):
        self.q: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for line in stream:
            self.q.put(line)
        self.q.put(None)

    def wait_for(self, needle: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no line with {needle!r}; got: {''.join(self.seen)}")

    def rest(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
        return "".join(self.seen)


def start_paused(dep, command: str, stage: str) -> tuple[subprocess.Popen, Lines, Lines]:
    """deploykit <command> that stops after <stage> (test hook) until a line arrives on stdin."""
    env = clean_env(DEPLOYKIT_TEST_PAUSE_AFTER=stage)
    proc = subprocess.Popen([sys.executable, "-m", "deploykit", command, "--state-dir", str(dep.state_dir)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    err.wait_for(f"paused after {stage}")
    return proc, out, err


class Poller:
    """GET /api through nginx over and over on loopback while a test runs (bounded)."""

    def __init__(self, dep, max_requests: int = 5000, max_seconds: float = 120):
        self.dep, self.results = dep, []
        self.stop_flag = threading.Event()
        self.max_requests, self.deadline = max_requests, time.monotonic() + max_seconds
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while (not self.stop_flag.is_set() and len(self.results) < self.max_requests
               and time.monotonic() < self.deadline):
            p = probe_http(self.dep.domain, self.dep.https_port, self.dep.base_url + "api", True, self.dep.cert)
            self.results.append(p.status if p.status else p.detail)
            time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        wait_until(lambda: self.results, timeout=30, what="the first polled answer")
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(timeout=30)

    @property
    def failures(self) -> list:
        return [r for r in self.results if r != 200]


@pytest.fixture
def dep(notebook):
    """The module's deployment; whatever a test edits, its spec is put back and applied after."""
    spec = notebook.state_dir / "deploykit.toml"
    original = spec.read_text()
    yield notebook
    if spec.read_text() != original:
        spec.write_text(original)
    res = notebook.dk("reload")
    assert res.returncode == 0, res.stdout + res.stderr
    assert api_ok(notebook)


# -- 1. plan shows the diff and changes nothing ------------------------------------------------

def test_plan_after_an_edit_shows_the_diff_and_changes_nothing(dep):
    edit_spec(dep, http={"upload_limit": "3m"}, notebook={"default_url": "/tree"})
    before, pids = snapshot(dep.state_dir, skip=("logs",), stat=True), daemon_pids(dep)
    res = dep.dk("plan")
    assert res.returncode == 0, res.stderr
    assert "-    client_max_body_size 1g;\n+    client_max_body_size 3m;\n" in res.stdout
    assert "-c.ServerApp.default_url = '/lab'\n+c.ServerApp.default_url = '/tree'\n" in res.stdout
    assert res.stdout.rstrip().splitlines()[-2:] == ["supervisor: restart jupyter (its configuration changed)",
                                                      "nginx: reload"]
    assert dep.dk("reload", "--dry-run").stdout == res.stdout
    hashed = (dep.state_dir / "secrets/notebook-password.hash").read_text().strip()
    assert hashed not in res.stdout and "argon2:$" not in res.stdout
    assert snapshot(dep.state_dir, skip=("logs",), stat=True) == before
    assert daemon_pids(dep) == pids


# -- 2. idempotence ----------------------------------------------------------------------------

def test_second_provision_writes_nothing_and_reloads_nothing(dep):
    checkpoints = sorted(p.name for p in (dep.state_dir / "checkpoints").iterdir())
    before, pids = snapshot(dep.state_dir, skip=("logs", ".lock"), stat=True), daemon_pids(dep)
    # The very flags (and password) of the first run.
    res = dep.dk("provision", "--target", "local", "--domain", dep.domain, "--http-port", dep.http_port,
                 "--https-port", dep.https_port, "--base-url", "/", "--password-stdin", input=PASSWORD + "\n")
    assert res.returncode == 0, res.stderr
    assert "no changes: " in res.stdout
    assert step(res.stdout, "write") is None and step(res.stdout, "reload") is None
    res = dep.dk("reload")
    assert res.returncode == 0 and "no changes: " in res.stdout
    assert snapshot(dep.state_dir, skip=("logs", ".lock"), stat=True) == before
    assert daemon_pids(dep) == pids          # supervisord, jupyter, nginx master and its worker generation
    assert sorted(p.name for p in (dep.state_dir / "checkpoints").iterdir()) == checkpoints


# -- 3. an edit nginx rejects ------------------------------------------------------------------

def test_edit_nginx_rejects_rolls_back_byte_for_byte_while_https_keeps_answering(dep):
    edit_spec(dep, http={"extra_directives": ["bogus_directive on;"]})   # passes deploykit's validator
    before, pids = snapshot(dep.state_dir, skip=(*WORKING, "deploykit.toml")), daemon_pids(dep)
    with Poller(dep) as poll:
        res = dep.dk("reload")
        polled_during = len(poll.results)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "validate failed: nginx rejected the configuration" in res.stderr
    assert 'unknown directive "bogus_directive"' in res.stderr
    rolled_back = res.stderr.split("rolled back: ", 1)[1]
    assert "file(s) restored (" in rolled_back and "deploykit.conf" in rolled_back
    assert "no daemon had been touched" in rolled_back
    assert snapshot(dep.state_dir, skip=(*WORKING, "deploykit.toml")) == before
    assert daemon_pids(dep) == pids
    assert polled_during > 0 and poll.failures == []
    # The operator's edit stays in the spec, to be fixed; the next plan shows it again.
    assert "+    bogus_directive on;" in dep.dk("plan").stdout


# -- 4. SIGTERM in the middle of an apply -----------------------------------------------------

@pytest.mark.parametrize("stage", ["write", "reload"])
def test_sigterm_during_apply_leaves_the_previous_deployment(dep, stage):
    edit_spec(dep, http={"upload_limit": "5m", "extra_directives": ["add_header X-Test 1 always;"]})
    before, pids = snapshot(dep.state_dir, skip=(*WORKING, "deploykit.toml")), daemon_pids(dep)
    proc, out, err = start_paused(dep, "reload", stage)
    if stage == "reload":  # the new configuration is live at this point
        assert probe_http(dep.domain, dep.https_port, "/api", True, dep.cert).headers.get("x-test") == "1"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 1
    stderr, stdout = err.rest(), out.rest()
    assert f"interrupted by SIGTERM during {stage}" in stderr, stdout + stderr
    assert snapshot(dep.state_dir, skip=(*WORKING, "deploykit.toml")) == before
    assert api_ok(dep)
    probe = probe_http(dep.domain, dep.https_port, "/api", True, dep.cert)
    assert probe.status == 200 and "x-test" not in probe.headers
    after = daemon_pids(dep)
    assert (after["supervisord"], after["programs"], after["nginx"]) == (pids["supervisord"], pids["programs"],
                                                                         pids["nginx"])
    if stage == "write":
        assert "no daemon had been touched" in stderr
        assert after["nginx_workers"] == pids["nginx_workers"]
    else:
        assert "nginx reloaded with the previous configuration" in stderr
        assert "the previous deployment answers again" in stderr
    [cp] = list_checkpoints(dep.state_dir / "checkpoints")[-1:]
    assert cp.state == "rolled-back"


# -- 5. reloads under load ---------------------------------------------------------------------

def test_three_reloads_under_load_fail_no_request(dep, tmp_path):
    stop = tmp_path / "stop-load"
    # Two clients in a second and third process: new visitors (a TLS connection per request)
    # and a browser-like client reusing connections.
    fresh = start_https_load(dep, stop, threads=3, min_requests=1500, keepalive=False)
    reuse = start_https_load(dep, stop, threads=2, min_requests=1500, keepalive=True)
    try:
        jupyter = daemon_pids(dep)["programs"]["jupyter"]
        for edit in ({"upload_limit": "2m"},
                     {"upload_limit": "2m", "extra_directives": ["add_header X-Test 1 always;"]},
                     {"upload_limit": "3m", "extra_directives": ["add_header X-Test 1 always;"]}):
            workers = daemon_pids(dep)["nginx_workers"]
            edit_spec(dep, http=edit)
            res = dep.dk("reload")
            assert res.returncode == 0, res.stdout + res.stderr
            assert "nginx reloaded" in res.stdout
            assert set(daemon_pids(dep)["nginx_workers"]) - set(workers), "a new worker generation"
        assert daemon_pids(dep)["programs"]["jupyter"] == jupyter
        # The clients were still running through all three reloads.
        assert fresh.poll() is None and reuse.poll() is None
    finally:
        stop.touch()
        results = [json.loads(p.communicate(timeout=300)[0]) for p in (fresh, reuse)]
    print("load during three reloads:", json.dumps([{k: r[k] for k in ("requests", "failed", "retried")}
                                                    for r in results]))
    for r in results:
        assert r["failed"] == 0, r["failures"]
        assert r["requests"] >= 1500
    assert probe_http(dep.domain, dep.https_port, "/api", True, dep.cert).headers.get("x-test") == "1"


# -- 6. only the program whose settings changed restarts ---------------------------------------

def test_nginx_setting_keeps_jupyter_and_notebook_setting_restarts_only_jupyter(dep):
    pids = daemon_pids(dep)
    edit_spec(dep, http={"upload_limit": "7m"})
    res = dep.dk("reload")
    assert res.returncode == 0, res.stderr
    assert step(res.stdout, "reload") == "nginx reloaded"
    after = daemon_pids(dep)
    assert after["programs"] == pids["programs"] and after["supervisord"] == pids["supervisord"]
    assert after["nginx"] == pids["nginx"] and set(after["nginx_workers"]) - set(pids["nginx_workers"])

    pids = daemon_pids(dep)
    edit_spec(dep, notebook={"default_url": "/tree"})
    res = dep.dk("reload")
    assert res.returncode == 0, res.stderr
    assert step(res.stdout, "reload") == "restarted jupyter"
    after = daemon_pids(dep)
    assert after["programs"]["jupyter"] != pids["programs"]["jupyter"]
    assert after["supervisord"] == pids["supervisord"]
    assert (after["nginx"], after["nginx_workers"]) == (pids["nginx"], pids["nginx_workers"])
    assert "default_url = '/tree'" in (dep.state_dir / "jupyter/jupyter_server_config.py").read_text()


# -- 7. two concurrent runs --------------------------------------------------------------------

def test_two_concurrent_reloads_do_not_interleave(dep):
    done_before = {cp.dir.name for cp in list_checkpoints(dep.state_dir / "checkpoints")}
    edit_spec(dep, http={"upload_limit": "2m"})
    first, first_out, _ = start_paused(dep, "reload", "write")     # holds the lock, files written
    edit_spec(dep, http={"upload_limit": "3m"})                      # the operator edits again meanwhile
    second = subprocess.Popen([sys.executable, "-m", "deploykit", "reload", "--state-dir", str(dep.state_dir)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=clean_env())
    second_out = Lines(second.stdout)
    second_out.wait_for(f"waiting for another deploykit run (pid {first.pid}) to finish")
    assert "client_max_body_size 2m;" in site_conf(dep)             # the second has written nothing
    first.stdin.write("\n")
    first.stdin.close()
    assert first.wait(timeout=120) == 0, first_out.rest()
    assert second.wait(timeout=120) == 0, second_out.rest() + second.stderr.read()
    assert "client_max_body_size 3m;" in site_conf(dep)
    new = [cp for cp in list_checkpoints(dep.state_dir / "checkpoints") if cp.dir.name not in done_before]
    assert [cp.state for cp in new] == ["done", "done"]
    # The second began from what the first had finished: its checkpoint holds the first's config.
    site = str(dep.state_dir / "nginx/sites/deploykit.conf")
    [entry] = [e for e in new[1].entries if e["path"] == site]
    assert "client_max_body_size 2m;" in Path(entry["backup"]).read_text()
    [entry] = [e for e in new[0].entries if e["path"] == site]
    assert "client_max_body_size 1g;" in Path(entry["backup"]).read_text()


# -- failed verify after a program restart -----------------------------------------------------

def test_failed_verify_after_a_restart_brings_the_old_program_back(dep):
    # Jupyter's new port is taken (bound, not listening: nginx gets "connection refused" at
    # once), so the restarted Jupyter exits: verify fails.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        old_port = parse_spec((dep.state_dir / "deploykit.toml").read_text()).internal.jupyter_port
        before = snapshot(dep.state_dir, skip=(*WORKING, "deploykit.toml"))
        edit_spec(dep, internal={"jupyter_port": taken.getsockname()[1]})
        res = dep.dk("reload")
    assert res.returncode == 1, res.stdout + res.stderr
    said = res.stderr
    assert "verify failed" in said
    assert "jupyter exited after it was started" in said or "jupyter failed to start (FATAL)" in said, said
    assert "restarted jupyter with the previous configuration" in said, said
    assert "the previous deployment answers again" in said, said
    assert snapshot(dep.state_dir, skip=(*WORKING, "deploykit.toml")) == before
    assert f"c.ServerApp.port = {old_port}" in (dep.state_dir / "jupyter/jupyter_server_config.py").read_text()
    assert daemon_pids(dep)["programs"]["jupyter"] and api_ok(dep)


# -- rollback ----------------------------------------------------------------------------------

def test_rollback_returns_to_the_previous_checkpoint(dep):
    before = snapshot(dep.state_dir, skip=WORKING)
    edit_spec(dep, http={"base_url": "/jupyter/"})
    res = dep.dk("reload")
    assert res.returncode == 0, res.stderr
    moved = probe_jupyter_api(dep.domain, dep.https_port, "/jupyter/api", True, dep.cert)
    assert moved.ok
    res = dep.dk("rollback")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "restored" in res.stdout and "verified" in res.stdout
    assert snapshot(dep.state_dir, skip=WORKING) == before          # the spec included
    assert api_ok(dep)
    assert not probe_jupyter_api(dep.domain, dep.https_port, "/jupyter/api", True, dep.cert).ok
    assert "no changes" in dep.dk("plan").stdout


def test_rollback_refuses_to_undo_the_first_provision(tmp_path):
    dep, _ = provision(tmp_path / "state")
    try:
        res = dep.dk("rollback")
        assert res.returncode == 1
        assert "created this deployment" in res.stderr and "uninstall" in res.stderr
        assert api_ok(dep)
    finally:
        dep.stop()


# -- kernel WebSockets across a reload ----------------------------------------------------------

def test_open_kernel_websocket_survives_an_nginx_reload(dep):
    import ssl

    import websocket

    s, _ = login(dep)
    kernel = start_kernel(s, dep)
    cookie = "; ".join(f"{c.name}={c.value}" for c in s.cookies)
    ws = websocket.create_connection(dep.ws_url(f"api/kernels/{kernel}/channels"), cookie=cookie, origin=dep.origin,
                                     sslopt={"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(dep.cert)}, timeout=60)
    try:
        assert run_on_socket(ws, "x = 41\nx + 1") == "42"
        workers = daemon_pids(dep)["nginx_workers"]
        edit_spec(dep, http={"upload_limit": "9m"})
        res = dep.dk("reload")
        assert res.returncode == 0 and "nginx reloaded" in res.stdout, res.stdout + res.stderr
        # The old worker that holds this connection keeps serving it (until worker_shutdown_timeout).
        assert set(children(daemon_pids(dep)["nginx"])) & set(workers)
        assert run_on_socket(ws, "x + 2") == "43"
    finally:
        ws.close()
    # A new connection goes through the new workers, to the same kernel and its state.
    assert execute(s, dep, kernel, "x") == "41"
    # Once its last connection is gone, the old generation exits without waiting for the timeout.
    wait_until(lambda: not set(children(daemon_pids(dep)["nginx"])) & set(workers), timeout=20,
               what="the old nginx workers to exit")
    s.delete(dep.url(f"api/kernels/{kernel}"), headers=xsrf_headers(s, dep))


# -- invalid edits ---------------------------------------------------------------------------

@pytest.mark.parametrize("line,named", [
    ('upload_limt = "2m"', "http.upload_limt"),                          # unknown key
    ('https_port = "many"', "http.https_port"),                          # wrong type
    ('base_url = "jupyter"', "http.base_url"),                           # bad value
])
def test_invalid_edit_exits_2_naming_the_key_and_changes_nothing(dep, line, named):
    spec = dep.state_dir / "deploykit.toml"
    key = line.split(" ")[0]
    lines = [ln for ln in spec.read_text().splitlines() if not ln.startswith(key + " = ")]
    lines.insert(lines.index("[http]") + 1, line)
    spec.write_text("\n".join(lines) + "\n")
    before, pids = snapshot(dep.state_dir, skip=("logs",), stat=True), daemon_pids(dep)
    for command in ("reload", "plan"):
        res = dep.dk(command)
        assert res.returncode == 2, res.stdout + res.stderr
        assert named in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert snapshot(dep.state_dir, skip=("logs",), stat=True) == before
    assert daemon_pids(dep) == pids


# -- dry run on a new state dir, uninstall ----------------------------------------------------

def test_dry_run_provision_for_a_new_state_dir_creates_nothing(tmp_path):
    state = tmp_path / "new" / "state"
    http_port, https_port = free_ports(2)
    res = dk("provision", "--target", "local", "--state-dir", state, "--domain", "jupyter.test", "--http-port",
             http_port, "--https-port", https_port, "--password-stdin", "--dry-run", input=PASSWORD + "\n")
    assert res.returncode == 0, res.stderr
    assert f"+++ b{state}/nginx/sites/deploykit.conf" in res.stdout
    assert f"+    listen {https_port} ssl http2;" in res.stdout
    assert f"new {state}/secrets/notebook-password.hash (secret or binary content not shown)" in res.stdout
    assert "argon2:$" not in res.stdout and "PRIVATE KEY" not in res.stdout
    assert res.stdout.rstrip().splitlines()[-3:] == ["supervisor: start supervisord", "supervisor: start jupyter (added)",
                                                     "nginx: start"]
    assert list(tmp_path.iterdir()) == []
    assert not processes_mentioning(str(state))


@pytest.mark.parametrize("remove_certs", [False, True])
def test_uninstall_removes_every_recorded_file_and_nothing_else(tmp_path, remove_certs):
    dep, _ = provision(tmp_path / "state")
    try:
        state = dep.state_dir
        ours = [state / "my-notes.txt", state / "tls/my-ca.pem", state / "nginx/README.operator",
                state / "notebooks/analysis.ipynb"]
        for p in ours:
            p.write_text("the operator's\n")
        record = json.loads(dep.dk("files", "--json").stdout)
        assert record == json.loads((state / "files.json").read_text())
        listed = dep.dk("files").stdout
        recorded = {Path(f["path"]): f["kind"] for f in record["files"]}
        assert all(str(p) in listed for p in recorded)
        files_before = {p for p in state.rglob("*") if not p.is_dir()}
        args = ["uninstall", "--yes"] + (["--remove-certs"] if remove_certs else [])
        res = dep.dk(*args)
        assert res.returncode == 0, res.stdout + res.stderr
        assert wait_until(lambda: not processes_mentioning(str(state)), timeout=30, what="processes to exit")
        gone = files_before - {p for p in state.rglob("*") if not p.is_dir()}
        certs = {p for p, kind in recorded.items() if kind == "cert"}
        assert certs
        expected_gone = set(recorded) - (set() if remove_certs else certs)
        assert expected_gone <= gone
        # Nothing else, apart from deploykit's working state (checkpoints hold copies of the
        # recorded files, secrets included; run state and the lock belong to stopped daemons).
        working = {state / "checkpoints", state / "run", state / "nginx/tmp", state / ".lock"}
        assert {p for p in gone - expected_gone if not any(w == p or w in p.parents for w in working)} == set()
        for p in ours:
            assert p.read_text() == "the operator's\n"
        for p in certs:
            assert p.exists() != remove_certs
        assert (state / "logs").is_dir()
        assert dk("status", "--state-dir", state).returncode == 2    # no deployment there any more
    finally:
        from support import kill_leftovers

        kill_leftovers(dep.state_dir)
