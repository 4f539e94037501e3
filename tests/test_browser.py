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
