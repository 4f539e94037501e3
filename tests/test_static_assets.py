"""Issue 9: nginx serves JupyterLab's and Notebook's bundles from disk, byte for byte what Jupyter
serves, under a non-root base URL, and nothing private becomes reachable without a login."""

from __future__ import annotations

import gzip
import http.client
import re
import ssl
import sys
import tomllib
from pathlib import Path

import pytest
import requests
from support import Deployment, dk, free_port, free_ports, kill_leftovers, login, provision, wait_until

from deploykit.labassets import StaticDir, build_static_locations, probe_static_dirs

pytestmark = pytest.mark.real

SECRET = "deploykit-static-assets-secret-7f3a"
HASHED = re.compile(r"(^|[./])[0-9a-f]{16,}\.[A-Za-z0-9]+$")


def provision_on_free_ports(state_dir: Path, **kwargs):
    # The internal port too: two deployments provisioned at once must not both pick 8888.
    state_dir.mkdir(parents=True, mode=0o700)
    (state_dir / "deploykit.toml").write_text(
        f'[deployment]\ndomain = "jupyter.test"\n\n[internal]\njupyter_port = {free_port()}\n')
    (state_dir / "deploykit.toml").chmod(0o600)
    return provision(state_dir, **kwargs)


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    d, _ = provision_on_free_ports(tmp_path_factory.mktemp("static") / "state", base_url="/jup/")
    notebooks = d.state_dir / "notebooks"
    (notebooks / "secret.ipynb").write_text('{"cells": [], "metadata": {"note": "%s"}, "nbformat": 4, '
                                            '"nbformat_minor": 5}' % SECRET)
    (notebooks / "secret.txt").write_text(SECRET)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def dirs():
    # support.dk runs deploykit with this Python, so it is the deployment's Jupyter environment.
    found = {d.name: Path(d.root) for d in probe_static_dirs(sys.executable)}
    assert set(found) == {"lab", "notebook"}, found
    return found


def jupyter_port(dep) -> int:
    return tomllib.loads((dep.state_dir / "deploykit.toml").read_text())["internal"]["jupyter_port"]


def direct(dep, path: str, **kwargs) -> requests.Response:
    """The same request straight to Jupyter's loopback port, with the Host nginx passes on."""
    s = requests.Session()
    s.trust_env = False
    return s.get(f"http://127.0.0.1:{jupyter_port(dep)}{dep.base_url}{path}",
                 headers={"Host": f"{dep.domain}:{dep.https_port}", **kwargs.pop("headers", {})}, **kwargs)


def raw_get(dep, raw_path: str, headers: dict | None = None, header_list: list | None = None):
    """GET exactly this path through nginx (urllib3 would resolve dot segments first): status, headers, body."""
    ctx = ssl.create_default_context(cafile=str(dep.cert))
    conn = http.client.HTTPSConnection(dep.domain, dep.https_port, context=ctx, timeout=30)
    try:
        conn.putrequest("GET", raw_path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        res = conn.getresponse()
        if header_list is not None:
            header_list += [(k.lower(), v) for k, v in res.getheaders()]
        return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
    finally:
        conn.close()


def served_by_nginx_from_disk(res: requests.Response) -> bool:
    # Jupyter adds a report-uri to the CSP of everything it answers; nginx's own header has none.
    return res.headers.get("server") == "nginx" and "report-uri" not in res.headers.get("content-security-policy", "")


def bundle_urls(dep, session) -> dict[str, str]:
    """The main bundles the real pages reference (JupyterLab at /lab, Notebook 7 at /tree)."""
    urls = {}
    for page, name in (("lab", "lab"), ("tree", "notebook")):
        html = session.get(dep.url(page)).text
        m = re.search(r'src="%sstatic/%s/(main\.[0-9a-f]+\.js)\?v=[0-9a-f]+"' % (re.escape(dep.base_url), name), html)
        assert m, f"no {name} bundle in /{page}: {html[:400]}"
        urls[name] = f"static/{name}/{m.group(1)}"
    return urls


def test_pages_reference_bundles_that_nginx_serves_from_disk(dep):
    s, res = login(dep)
    assert res.status_code == 302
    for name, path in bundle_urls(dep, s).items():
        via_nginx = dep.session().get(dep.url(path))     # no login: bundles are public
        assert via_nginx.status_code == 200, path
        assert served_by_nginx_from_disk(via_nginx), via_nginx.headers
        assert via_nginx.content == direct(dep, path).content
        assert via_nginx.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_every_file_nginx_serves_equals_jupyters_own(dep, dirs):
    s = dep.session()
    compared = collided = 0
    for name, root in dirs.items():
        other = dirs["notebook" if name == "lab" else "lab"]
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = f.relative_to(root)
            path = f"static/{name}/{rel}"
            mine, theirs = s.get(dep.url(path)), direct(dep, path)
            assert mine.status_code == 200, path
            assert served_by_nginx_from_disk(mine), (path, mine.headers)
            assert mine.content == f.read_bytes(), path
            if theirs.status_code == 403 and (other / rel).is_file():
                # Jupyter Server caches static lookups by file name alone, so a name both front
                # ends ship (fonts, licenses) is refused for the second one asked. nginx has no such cache.
                collided += 1
                continue
            assert theirs.status_code == 200, path
            assert mine.content == theirs.content, path
            assert mine.headers["content-type"].split(";")[0] == theirs.headers["content-type"].split(";")[0], path
            compared += 1
    assert compared > 300 and compared > 3 * collided, (compared, collided)


def test_headers_cache_and_security(dep, dirs):
    s = dep.session()
    hashed = next(p.name for p in sorted(dirs["lab"].iterdir()) if HASHED.search(p.name) and p.suffix == ".js")
    for path, cache in ((f"static/lab/{hashed}", "public, max-age=31536000, immutable"),
                        ("static/lab/index.html", "no-cache"), ("static/lab/package.json", "no-cache")):
        res = s.get(dep.url(path))
        assert res.status_code == 200
        assert res.headers["cache-control"] == cache, path
        # The server's headers survive the location's own add_header.
        assert res.headers["strict-transport-security"] == "max-age=63072000"
        assert res.headers["x-content-type-options"] == "nosniff"
        assert res.headers["referrer-policy"] == "strict-origin-when-cross-origin"
        assert res.headers["content-security-policy"] == "frame-ancestors 'self'"
        seen: list = []
        raw_get(dep, dep.base_url + path, header_list=seen)
        names = [k for k, _ in seen]
        for once in ("cache-control", "strict-transport-security", "x-content-type-options", "content-security-policy"):
            assert names.count(once) == 1, (path, once, seen)
    # Revalidation works for the names without a hash.
    first = s.get(dep.url("static/lab/index.html"))
    again = s.get(dep.url("static/lab/index.html"), headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


def test_compressed_for_browsers_and_identical_once_decompressed(dep, dirs):
    largest = max((p for p in dirs["lab"].iterdir() if p.suffix == ".js"), key=lambda p: p.stat().st_size)
    status, headers, body = raw_get(dep, f"{dep.base_url}static/lab/{largest.name}", {"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in headers["vary"]
    assert len(body) < largest.stat().st_size / 2
    assert gzip.decompress(body) == largest.read_bytes() == direct(dep, f"static/lab/{largest.name}").content
    # Jupyter's pages and API are never compressed by nginx (BREACH).
    status, headers, _ = raw_get(dep, f"{dep.base_url}api", {"Accept-Encoding": "gzip"})
    assert status == 200 and "content-encoding" not in headers


def test_files_not_on_disk_still_go_to_jupyter(dep):
    res = dep.session().get(dep.url("static/lab/no-such-bundle.0123456789abcdef.js"))
    assert res.status_code == 404
    assert "report-uri" in res.headers["content-security-policy"], "Jupyter answered, not nginx"
    assert res.headers["strict-transport-security"] == "max-age=63072000"


PRIVATE = ["tree", "lab", "api/contents", "api/contents/secret.ipynb", "files/secret.ipynb", "files/secret.txt",
           "notebooks/secret.ipynb", "edit/secret.txt", "api/sessions", "api/kernels", "api/status"]


@pytest.mark.parametrize("path", PRIVATE)
def test_private_paths_still_need_a_login(dep, path):
    res = dep.session().get(dep.url(path), allow_redirects=False)
    assert res.status_code in (302, 403), (path, res.status_code)
    if res.status_code == 302:
        assert "/jup/login" in res.headers["location"]
    assert SECRET.encode() not in res.content


def traversals(dep) -> list[str]:
    s = f"{dep.base_url}static/lab/"
    state = str(dep.state_dir).lstrip("/")
    deep = "../" * 12
    out = []
    for target in ("files/secret.ipynb", "api/contents/secret.ipynb", "tree", "notebooks/secret.ipynb"):
        out += [f"{s}../../{target}", f"{s}%2e%2e/%2e%2e/{target}", f"{s}..%2f..%2f{target}",
                f"{s}%2e%2e%2f%2e%2e%2f{target}", f"{s}%252e%252e/%252e%252e/{target}", f"{s}..\\..\\{target}"]
    for target in (f"{state}/deploykit.toml", f"{state}/notebooks/secret.ipynb", f"{state}/notebooks/secret.txt",
                   f"{state}/secrets/notebook-password.hash", "etc/passwd"):
        out += [f"{s}{deep}{target}", f"{s}{deep.replace('..', '%2e%2e')}{target}",
                f"{s}{deep.replace('../', '..%2f')}{target}", f"{s}/{target}", f"{s}%2f{target}"]
    out += [f"{s}secret.ipynb", f"{s}../../../notebooks/secret.txt", f"{dep.base_url}static/notebook/../../files/secret.txt"]
    return out


def test_traversal_under_the_static_location_reaches_nothing_private(dep):
    secret_hash = (dep.state_dir / "secrets" / "notebook-password.hash").read_bytes().strip()
    for raw in traversals(dep):
        status, headers, body = raw_get(dep, raw)
        assert status in (302, 400, 403, 404), (raw, status, body[:200])
        if status == 302:
            assert "/jup/login" in headers["location"], (raw, headers["location"])
        assert SECRET.encode() not in body, raw
        assert secret_hash not in body and b"root:x:0:0" not in body and b"[deployment]" not in body, raw


def test_bundles_live_under_the_base_url_only(dep):
    s = dep.session()
    res = s.get(f"https://{dep.domain}:{dep.https_port}/static/lab/index.html", allow_redirects=False)
    assert res.status_code == 404
    assert s.get(dep.url("static/lab/index.html")).status_code == 200


def test_turning_static_assets_off_gives_them_back_to_jupyter(dep):
    spec = dep.state_dir / "deploykit.toml"
    original = spec.read_text()
    assert "static_assets = true" in original
    try:
        spec.write_text(original.replace("static_assets = true", "static_assets = false"))
        res = dep.dk("reload", timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "static/lab" not in (dep.state_dir / "nginx" / "sites" / "deploykit.conf").read_text()
        res = dep.session().get(dep.url("static/lab/index.html"))
        assert res.status_code == 200 and not served_by_nginx_from_disk(res)
    finally:
        spec.write_text(original)
        res = dep.dk("reload", timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
    wait_until(lambda: served_by_nginx_from_disk(dep.session().get(dep.url("static/lab/index.html"))),
               timeout=30, what="nginx to serve the bundles again")


# -- the pure part: locations for every mode and base URL -----------------------------------

def _python_regex(nginx_regex: str) -> re.Pattern:
    return re.compile(nginx_regex.replace("(?<", "(?P<"))


def test_locations_for_notebook_and_hub_under_any_base_url():
    dirs = (StaticDir("lab", "/env/share/jupyter/lab/static"), StaticDir("notebook", "/env/notebook/static"))
    nb = {loc["name"]: _python_regex(loc["regex"]) for loc in build_static_locations("/a.b/", "notebook", dirs)}
    assert nb["lab"].match("/a.b/static/lab/main.0123456789abcdef.js")["deploykit_asset"] == "main.0123456789abcdef.js"
    assert nb["notebook"].match("/a.b/static/notebook/x.js")
    assert not nb["lab"].match("/axb/static/lab/x.js"), "the '.' of the base URL is literal"
    assert not nb["lab"].match("/static/lab/x.js")
    assert not nb["lab"].match("/a.b/static/lab//etc/passwd")
    hub = {loc["name"]: _python_regex(loc["regex"]) for loc in build_static_locations("/", "hub", dirs)}
    assert hub["lab"].match("/user/alice/static/lab/x.js")["deploykit_asset"] == "x.js"
    assert hub["lab"].match("/user/alice/gpu/static/lab/x.js")["deploykit_asset"] == "x.js"
    assert hub["notebook"].match("/user/bob/static/notebook/main.js")
    assert not hub["lab"].match("/hub/static/lab/x.js")


def test_probe_of_an_environment_without_jupyterlab_finds_nothing():
    assert probe_static_dirs("/usr/bin/python3") == () or all(
        Path(d.root).is_dir() for d in probe_static_dirs("/usr/bin/python3"))
    assert probe_static_dirs("/nonexistent/python") == ()


# -- Hub mode: every user's server, /user/<name>/static/... -----------------------------------

HUB_PASSWORD = "static-assets-shared-pw"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    import os
    import pwd
    import secrets
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("hub mode with the localprocess spawner needs root")
    state = tmp_path_factory.mktemp("static-hub") / "state"
    state.mkdir(mode=0o700)
    hub_port, proxy_port, api_port = free_ports(3)
    (state / "deploykit.toml").write_text(
        f'[deployment]\ndomain = "jupyter.test"\nmode = "hub"\n\n[internal]\nhub_port = {hub_port}\n'
        f'proxy_port = {proxy_port}\nproxy_api_port = {api_port}\n')
    (state / "deploykit.toml").chmod(0o600)
    user = f"st{secrets.token_hex(3)}"
    http_port, https_port = free_ports(2)
    res = dk("provision", "--target", "local", "--state-dir", state, "--domain", "jupyter.test", "--http-port",
             http_port, "--https-port", https_port, "--mode", "hub", "--authenticator", "shared-password",
             "--allow-all", "--idle-timeout", "0", "--shared-password-stdin", input=HUB_PASSWORD + "\n")
    d = Deployment(state, "jupyter.test", http_port, https_port)
    if res.returncode == 2 and "not implemented" in res.stderr:
        kill_leftovers(state)
        pytest.skip("hub mode not implemented yet")
    if res.returncode != 0:
        d.stop()
        raise AssertionError(res.stdout + res.stderr)
    d.proxy_port, d.user = proxy_port, user
    yield d
    d.stop()
    account = f"jupyter-{user}"
    try:
        uid = pwd.getpwnam(account).pw_uid
    except KeyError:
        return
    for pid_dir in Path("/proc").iterdir():
        try:
            if pid_dir.name.isdigit() and pid_dir.stat().st_uid == uid:
                os.kill(int(pid_dir.name), 9)
        except OSError:
            pass
    subprocess.run(["userdel", "--remove", account], capture_output=True, timeout=60)


def hub_login(dep, user: str):
    s = dep.session()
    page = s.get(dep.url("hub/login"))
    xsrf = s.cookies.get("_xsrf") or re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    res = s.post(dep.url("hub/login"), data={"username": user, "password": HUB_PASSWORD, "_xsrf": xsrf},
                 allow_redirects=False, headers={"Referer": dep.url("hub/login")})
    assert res.status_code == 302, res.text[:300]
    return s


def test_hub_users_bundles_come_from_disk_and_equal_their_servers_own(hub, dirs):
    s = hub_login(hub, hub.user)
    s.get(hub.url(f"hub/spawn/{hub.user}"), allow_redirects=False)
    wait_until(lambda: s.get(hub.url(f"user/{hub.user}/api"), allow_redirects=False).status_code == 200,
               timeout=180, what="the user's server")
    proxy = requests.Session()
    proxy.trust_env = False
    for name, root in dirs.items():
        files = sorted(p for p in root.iterdir() if p.is_file() and HASHED.search(p.name))[:5]
        for f in files + [max(root.iterdir(), key=lambda p: p.stat().st_size)]:
            path = f"user/{hub.user}/static/{name}/{f.name}"
            mine = hub.session().get(hub.url(path))     # no login: public bundles
            assert mine.status_code == 200 and served_by_nginx_from_disk(mine), (path, mine.headers)
            assert mine.content == f.read_bytes(), path
            # The user's own Jupyter, through the hub's proxy (which nginx normally talks to).
            theirs = proxy.get(f"http://127.0.0.1:{hub.proxy_port}/{path}", cookies=s.cookies,
                               headers={"Host": f"{hub.domain}:{hub.https_port}"}, allow_redirects=False)
            if theirs.status_code == 403 and name == "notebook":
                continue     # Jupyter Server's name-only static cache (see above)
            assert theirs.status_code == 200, (path, theirs.status_code)
            assert theirs.content == mine.content, path
    # Named servers have the same layout one level down.
    f = next(p for p in sorted(dirs["lab"].iterdir()) if HASHED.search(p.name))
    res = hub.session().get(hub.url(f"user/{hub.user}/second/static/lab/{f.name}"))
    assert res.status_code == 200 and res.content == f.read_bytes()


@pytest.mark.parametrize("path", ["user/{u}/api/contents", "user/{u}/files/x.txt", "user/{u}/tree", "user/{u}/lab",
                                  "user/{u}/api/kernels", "hub/api/users", "hub/home",
                                  "user/{u}/static/lab/../../api/contents", "user/{u}/static/lab/%2e%2e/%2e%2e/tree"])
def test_hub_private_paths_still_need_a_login(hub, path):
    raw = hub.base_url + path.format(u=hub.user)
    status, headers, body = raw_get(hub, raw)
    assert status in (302, 401, 403, 404), (raw, status, body[:200])
    if status == 302:
        # To the hub: its login page, its OAuth step, or the spawn page; never the content itself.
        assert "/hub/" in headers["location"], headers["location"]
    assert b'"content"' not in body and b'"kernels"' not in body
