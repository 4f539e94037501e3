"""Issue: Notebook behind nginx, end to end on the local target, with the real daemons."""

from __future__ import annotations

import os
import signal

import pytest
from support import dk, execute, kill_leftovers, login, processes_mentioning, provision, start_kernel, tree_snapshot, wait_until

pytestmark = pytest.mark.real


def test_api_answers_through_nginx_over_https(notebook):
    res = notebook.session().get(notebook.url("api"))
    assert res.status_code == 200
    assert "version" in res.json()
    assert res.headers["server"] == "nginx"


def test_plain_http_redirects_to_https_with_security_headers(notebook):
    s = notebook.session()
    res = s.get(f"http://{notebook.domain}:{notebook.http_port}/tree?x=1", allow_redirects=False)
    assert res.status_code == 301
    assert res.headers["location"] == f"https://{notebook.domain}:{notebook.https_port}/tree?x=1"
    res = s.get(notebook.url("api"))
    assert res.headers["strict-transport-security"] == "max-age=63072000"
    assert res.headers["x-content-type-options"] == "nosniff"
    assert "," not in res.headers["x-content-type-options"], "nginx and Jupyter must not both send it"


def test_login_form_accepts_the_password_and_refuses_a_wrong_one(notebook):
    s, res = login(notebook)
    assert res.status_code == 302, res.text[:300]
    assert s.get(notebook.url("api/status")).status_code == 200
    s2, res = login(notebook, password="wrong-password")
    assert res.status_code in (200, 401)
    assert s2.get(notebook.url("api/status")).status_code == 403


def test_kernel_runs_code_over_wss_through_nginx(notebook):
    s, _ = login(notebook)
    kernel = start_kernel(s, notebook)
    assert execute(s, notebook, kernel, "1+1") == "2"


def test_supervisor_restarts_jupyter_after_kill_9(notebook):
    pid = notebook.program_pid("jupyter")
    assert pid
    os.kill(pid, signal.SIGKILL)
    new_pid = wait_until(lambda: (p := notebook.program_pid("jupyter")) not in (None, 0, pid) and
                         notebook.status()["healthy"] and p, timeout=60, what="jupyter to come back")
    assert new_pid != pid
    assert notebook.session().get(notebook.url("api")).json()["version"]


def test_base_url_works_for_api_and_kernels(tmp_path):
    dep, _ = provision(tmp_path / "state", base_url="/jupyter/")
    try:
        assert dep.session().get(dep.url("api")).json()["version"]
        root = dep.session().get(f"https://{dep.domain}:{dep.https_port}/", allow_redirects=False)
        assert root.status_code == 302 and root.headers["location"].endswith("/jupyter/")
        s, res = login(dep)
        assert res.status_code == 302
        assert execute(s, dep, start_kernel(s, dep), "6*7") == "42"
    finally:
        dep.stop()


def test_stop_leaves_no_process_behind(tmp_path):
    dep, _ = provision(tmp_path / "state")
    try:
        assert processes_mentioning(str(dep.state_dir))
        s, _ = login(dep)
        start_kernel(s, dep)  # a kernel is a grandchild; it must go too
        res = dep.dk("stop")
        assert res.returncode == 0, res.stderr
        assert wait_until(lambda: not processes_mentioning(str(dep.state_dir)), timeout=30,
                          what="processes to exit")
        assert not processes_mentioning(str(dep.state_dir / "jupyter"))
    finally:
        kill_leftovers(dep.state_dir)  # only matters when an assertion above failed


def test_generated_password_is_printed_once_and_only_its_hash_is_stored(tmp_path):
    dep, res = provision(tmp_path / "state", password=None)
    try:
        line = [l for l in res.stdout.splitlines() if "generated password" in l]
        assert len(line) == 1
        password = line[0].rsplit(" ", 1)[1]
        assert len(password) >= 16
        for p in dep.state_dir.rglob("*"):
            if p.is_file():
                assert password.encode() not in p.read_bytes(), p
        dep.password = password
        assert login(dep)[1].status_code == 302
    finally:
        dep.stop()


BAD_INPUT = [
    (["--domain", "a;b.test"], "--domain"),
    (["--domain", "a{b}.test"], "--domain"),
    (["--domain", "a b.test"], "--domain"),
    (["--domain", "a\nb.test"], "--domain"),
    (["--domain", "jupyter.test", "--https-port", "70000"], "--https-port"),
    (["--domain", "jupyter.test", "--http-port", "0"], "--http-port"),
    (["--domain", "jupyter.test", "--base-url", "jupyter/"], "--base-url"),
    (["--domain", "jupyter.test", "--base-url", "/a/../b/"], "--base-url"),
    (["--domain", "jupyter.example.com", "--tls", "off"], "tls.mode"),
    (["--domain", "jupyter.test", "--mode", "nope"], "--mode"),
]


@pytest.mark.parametrize("args,named", BAD_INPUT)
def test_bad_input_exits_2_and_creates_nothing(tmp_path, args, named):
    state = tmp_path / "state"
    res = dk("provision", "--target", "local", "--state-dir", state, *args, "--password-stdin", input="x" * 12)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert named in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 3
    assert not state.exists()


@pytest.mark.parametrize("args,named", BAD_INPUT[:4] + BAD_INPUT[6:8])
def test_bad_input_leaves_an_existing_deployment_unchanged(notebook, args, named):
    before = tree_snapshot(notebook.state_dir / "nginx") | tree_snapshot(notebook.state_dir / "jupyter")
    spec_before = (notebook.state_dir / "deploykit.toml").read_bytes()
    res = notebook.dk("provision", *args)
    assert res.returncode == 2, res.stderr
    assert (notebook.state_dir / "deploykit.toml").read_bytes() == spec_before
    assert tree_snapshot(notebook.state_dir / "nginx") | tree_snapshot(notebook.state_dir / "jupyter") == before


def test_hash_password_round_trip():
    res = dk("hash-password", "--stdin", input="s3cret-pass\n")
    assert res.returncode == 0
    hashed = res.stdout.strip()
    assert hashed.startswith("argon2:")
    assert dk("hash-password", "--stdin", "--verify", hashed, input="s3cret-pass\n").returncode == 0
    assert dk("hash-password", "--stdin", "--verify", hashed, input="wrong\n").returncode == 1
    # legacy sha1 hashes from old Notebook configs still verify
    legacy = "sha1:0e2a6e2a2f1d:" + __import__("hashlib").sha1(b"s3cret-pass0e2a6e2a2f1d").hexdigest()
    assert dk("hash-password", "--stdin", "--verify", legacy, input="s3cret-pass\n").returncode == 0
