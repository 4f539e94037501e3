"""Fixtures for the whole suite. Test domains resolve to 127.0.0.1 inside the test process."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import TEST_SUFFIXES, provision  # noqa: E402

_real_getaddrinfo = socket.getaddrinfo


def _loopback_getaddrinfo(host, *args, **kwargs):
    if isinstance(host, str) and (host.endswith(TEST_SUFFIXES) or host == "localhost"):
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def test_domains_resolve_to_loopback():
    socket.getaddrinfo = _loopback_getaddrinfo
    yield
    socket.getaddrinfo = _real_getaddrinfo


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    """One real Notebook deployment (nginx + supervisord + Jupyter) shared by a module's tests."""
    dep, _ = provision(tmp_path_factory.mktemp("nb") / "state")
    yield dep
    dep.stop()


@pytest.fixture
def state_dir(tmp_path):
    d = tmp_path / "state"
    yield d
    from support import kill_leftovers

    kill_leftovers(d)
