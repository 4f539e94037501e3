"""Issue: proven in a real browser. Chromium logs in over HTTPS through deploykit's nginx, runs a
cell in JupyterLab over the proxied WebSocket, saves the notebook, and uploads 20 MB."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest
from browser import Shots, browser_page, chromium_missing_reason
from support import provision

pytestmark = [pytest.mark.real, pytest.mark.browser]
reason = chromium_missing_reason()
if reason:
    pytestmark.append(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def nb(tmp_path_factory):
    dep, _ = provision(tmp_path_factory.mktemp("browser") / "state", base_url="/base/")
    yield dep
    dep.stop()


def test_notebook_login_run_cell_save_and_upload(nb, tmp_path):
    shots = Shots("notebook")
    with browser_page(nb.domain, nb.cert, tmp_path) as page:
        page.goto(nb.url())
        page.wait_for_selector("#password_input")
        shots.take(page, "login-page")
        assert page.url.startswith(nb.url("login"))
        page.fill("#password_input", nb.password)
        page.click("#login_submit")
        try:
            page.wait_for_url(nb.url("lab") + "*", timeout=30_000)
        except Exception:
            shots.take(page, "after-login")
            raise AssertionError(f"after login the browser is at {page.url}")
        page.wait_for_selector('.jp-LauncherCard[data-category="Notebook"]')
        no_news = page.get_by_role("button", name="No", exact=True)
        if no_news.count():
            no_news.first.click()  # JupyterLab's "get notified about news?" toast
        shots.take(page, "jupyterlab")

        page.click('.jp-LauncherCard[data-category="Notebook"]')
        page.wait_for_url("**/Untitled.ipynb")
        editor = page.locator(".jp-Notebook .cm-content").first
        editor.wait_for()
        # The kernel connects over wss:// through nginx; the status bar says so when it is ready.
        page.wait_for_function("() => document.body.innerText.includes('| Idle')")
        shots.take(page, "notebook-open")
        editor.click()
        page.keyboard.type("6*7")
        page.keyboard.press("Shift+Enter")
        page.wait_for_function("() => [...document.querySelectorAll('.jp-OutputArea-output')]"
                               ".some(e => e.textContent.trim() === '42')")
        shots.take(page, "cell-ran")

        page.click('.jp-NotebookPanel-toolbar [data-command="docmanager:save"]')
        # JupyterLab asks for a name on the first save.
        name_box = page.locator(".jp-Dialog input[type=text]")
        name_box.wait_for()
        name_box.fill("answer.ipynb")
        page.click(".jp-Dialog .jp-mod-accept")
        saved = nb.state_dir / "notebooks" / "answer.ipynb"
        for _ in range(150):
            if saved.exists() and "6*7" in saved.read_text():
                break
            page.wait_for_timeout(200)
        shots.take(page, "after-save")
        cells = json.loads(saved.read_text())["cells"]
        assert "".join(cells[0]["source"]) == "6*7"
        assert "".join(cells[0]["outputs"][0]["data"]["text/plain"]) == "42"
        shots.take(page, "saved")

        # 20 MB through the browser, nginx and the contents API, as JupyterLab uploads it.
        payload = os.urandom(20 * 1024 * 1024)
        result = page.evaluate("""async ([b64, url]) => {
            const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || "";
            const r = await fetch(url, {method: "PUT", headers: {"Content-Type": "application/json",
                "X-XSRFToken": decodeURIComponent(xsrf)},
                body: JSON.stringify({type: "file", format: "base64", content: b64})});
            return r.status;
        }""", [base64.b64encode(payload).decode(), nb.url("api/contents/upload-20mb.bin")])
        assert result in (200, 201)
        uploaded = nb.state_dir / "notebooks" / "upload-20mb.bin"
        assert hashlib.sha256(uploaded.read_bytes()).digest() == hashlib.sha256(payload).digest()
        page.goto(nb.url("lab"))
        page.get_by_text("upload-20mb.bin").first.wait_for()
        shots.take(page, "uploaded")


@pytest.fixture(scope="module")
def hub_users():
    from support import make_system_user, remove_system_user

    made = {"admin": make_system_user("dkb"), "user": make_system_user("dkb")}
    yield made
    for name, _ in made.values():
        remove_system_user(name)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, hub_users):
    from support import provision_hub

    dep, _ = provision_hub(tmp_path_factory.mktemp("browser-hub") / "state",
                           extra=["--admin", hub_users["admin"][0], "--allow", hub_users["user"][0],
                                  "--idle-timeout", "0"])
    yield dep
    dep.stop()


def _hub_log_in(page, dep, name, password, shots, tag):
    page.goto(dep.url("hub/login"))
    page.wait_for_selector("#username_input")
    page.fill("#username_input", name)
    page.fill("#password_input", password)
    shots.take(page, f"{tag}-login")
    page.click("#login_submit")


@pytest.mark.skipif(os.geteuid() != 0, reason="hub mode needs root (PAM users)")
def test_hub_pam_user_spawns_runs_a_cell_and_logs_out(hub, hub_users, tmp_path):
    shots = Shots("hub")
    name, password = hub_users["user"]
    with browser_page(hub.domain, hub.cert, tmp_path) as page:
        _hub_log_in(page, hub, name, password, shots, "user")
        # The hub spawns the server (progress page), then JupyterLab opens at /user/<name>/lab.
        page.wait_for_url(f"**/user/{name}/lab**", timeout=120_000)
        page.wait_for_selector('.jp-LauncherCard[data-category="Notebook"]', timeout=120_000)
        no_news = page.get_by_role("button", name="No", exact=True)
        if no_news.count():
            no_news.first.click()
        shots.take(page, "user-jupyterlab")
        page.click('.jp-LauncherCard[data-category="Notebook"]')
        editor = page.locator(".jp-Notebook .cm-content").first
        editor.wait_for()
        page.wait_for_function("() => document.body.innerText.includes('| Idle')")
        editor.click()
        page.keyboard.type("import getpass; getpass.getuser()")
        page.keyboard.press("Shift+Enter")
        page.wait_for_function("(u) => [...document.querySelectorAll('.jp-OutputArea-output')]"
                               ".some(e => e.textContent.includes(u))", arg=name)
        shots.take(page, "user-cell-ran")
        page.goto(hub.url("hub/logout"))
        page.wait_for_selector("#username_input")
        shots.take(page, "user-logged-out")
        assert hub.session().get(hub.url(f"user/{name}/api/status"), allow_redirects=False).status_code in (302, 403)


@pytest.mark.skipif(os.geteuid() != 0, reason="hub mode needs root (PAM users)")
def test_hub_admin_page_lists_the_user(hub, hub_users, tmp_path):
    shots = Shots("hub-admin")
    admin, password = hub_users["admin"]
    user = hub_users["user"][0]
    with browser_page(hub.domain, hub.cert, tmp_path) as page:
        _hub_log_in(page, hub, admin, password, shots, "admin")
        page.wait_for_url(f"**/user/{admin}/**", timeout=120_000)
        page.goto(hub.url("hub/admin"))
        page.get_by_text(user, exact=True).first.wait_for(timeout=60_000)
        shots.take(page, "admin-page")
