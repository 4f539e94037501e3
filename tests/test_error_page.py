"""Issue 8, test 5 and login rate limiting: what nginx answers when Jupyter is down, and to a burst
of login attempts.

One deployment provisioned with --login-rate-limit 1r/m: one attempt a minute refills, so the
count of attempts let through in a quick burst does not depend on how fast this machine is.
"""

from __future__ import annotations

import pytest
from support import provision, wait_until

from deploykit.paths import local_paths
from deploykit.supervisor import Supervisor

pytestmark = pytest.mark.real

BURST = 5  # site.conf.j2: limit_req ... burst=5 nodelay


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    dep, _ = provision(tmp_path_factory.mktemp("limited") / "state", extra=["--login-rate-limit", "1r/m"])
    yield dep
    dep.stop()


def test_friendly_page_with_502_while_jupyter_is_stopped(limited):
    rpc = Supervisor(local_paths(limited.state_dir)).rpc().supervisor
    rpc.stopProcess("jupyter", True)
    try:
        s = limited.session()
        for path in ("lab", "api/status", "notebooks/x.ipynb"):
            res = s.get(limited.url(path), allow_redirects=False)
            assert res.status_code in (502, 503), (path, res.status_code)
            assert res.headers["content-type"].startswith("text/html")
            assert "Jupyter is restarting or not reachable right now" in res.text
            assert "deploykit doctor" in res.text
            assert "nginx" not in res.text.lower(), "nginx's own error page"
            # Never cached (a browser must not keep showing it once Jupyter is back), and the
            # server's security headers are still sent with it.
            assert "no-cache" in res.headers.get("cache-control", "") or "no-store" in res.headers.get("cache-control", "")
            assert res.headers["strict-transport-security"].startswith("max-age=")
        # The page itself is not reachable as a URL of its own.
        assert s.get(limited.url("deploykit-errors/unavailable.html")).status_code == 404
    finally:
        rpc.startProcess("jupyter", True)
    wait_until(lambda: limited.session().get(limited.url("api")).status_code == 200, timeout=60,
               what="Jupyter to answer again")
    assert "version" in limited.session().get(limited.url("api")).json()


def test_login_attempts_beyond_the_burst_get_429(limited):
    s = limited.session()
    statuses = []
    for _ in range(BURST + 5):  # bounded: a handful of requests on loopback
        res = s.post(limited.url("login"), data={"password": "wrong-guess", "_xsrf": "x"}, allow_redirects=False,
                     headers={"Origin": limited.origin, "Referer": limited.url("login")})
        statuses.append(res.status_code)
    # nginx lets the first request and a burst of 5 more through at once, then refuses.
    assert 429 not in statuses[:BURST + 1], statuses
    assert statuses[BURST + 1:] == [429] * (len(statuses) - BURST - 1), statuses
    # Only the login page is limited: the rest of Jupyter answers as usual.
    assert s.get(limited.url("api")).status_code == 200
