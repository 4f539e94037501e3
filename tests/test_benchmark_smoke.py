"""Issue 9: the benchmark runs end to end at a tiny size, so it does not rot. No timed assertions:
the numbers are only checked for being numbers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, clean_env, processes_mentioning

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    res = subprocess.run([sys.executable, "-m", "benchmarks.run", "--size", "tiny", "--spawns", "1",
                          "--out-dir", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env=clean_env())
    m = re.search(r"deploykit benchmark \(tiny\) in (\S+)", res.stdout)
    return res, out, Path(m.group(1)) if m else None


def test_exits_zero_and_cleans_up(run):
    res, _, workdir = run
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert workdir is not None
    assert not workdir.exists(), "the temporary deployment is removed"
    assert processes_mentioning(str(workdir)) == []


def test_json_has_every_measurement(run):
    res, out, _ = run
    assert res.returncode == 0
    r = json.loads((out / "latest.json").read_text())
    assert r["machine"]["cores"] >= 1 and r["versions"]["nginx"] != "not found"
    for name in ("Jupyter direct", "nginx HTTPS", "nginx HTTP", "CHP HTTP", "CHP HTTPS"):
        t = r["api"][name]
        assert t["rps"] > 0 and t["p99_ms"] >= t["p50_ms"] > 0, name
        assert t["errors"] == 0 and t["non_2xx_3xx"] == 0, (name, t)
    bundle = r["bundle"]["targets"]
    assert set(bundle) == {"Jupyter direct", "nginx HTTPS", "nginx HTTP", "nginx HTTP, proxied", "nginx HTTPS, gzip"}
    assert all(t["rps"] > 0 and t["non_2xx_3xx"] == 0 for t in bundle.values())
    ws = r["websocket"]["paths"]
    assert set(ws) == {"nginx (wss, deploykit)", "Jupyter direct (ws)", "CHP (ws)"}
    assert all(p["count"] == r["settings"]["ws_executes"] and p["p50_ms"] > 0 for p in ws.values())
    assert r["help"]["median_seconds"] > 0
    assert r["provision"]["to_healthy_https_seconds"] > 0
    assert r["reload"]["noop_files_changed"] == [0] * len(r["reload"]["noop_seconds"])
    # The site file, plus deploykit's own record and applied-spec copy.
    assert all(n >= 1 for n in r["reload"]["one_file_files_changed"]) and r["reload"]["one_file_seconds"]
    # Measured, or said plainly why not.
    assert r["hub"].get("measured") or r["not_measured"]["hub"]
    assert {v["target"] for v in r["verdicts"]} >= {"deploykit --help under 0.3 s", "no-op reload under 1 s"}


def test_report_and_plot(run):
    res, out, _ = run
    assert res.returncode == 0
    md = (out / "benchmarks.md").read_text()
    for heading in ("## Machine", "## Versions", "## Targets", "## HTTP: Jupyter's `/api`",
                    "## JupyterLab's largest bundle", "## WebSocket", "## deploykit itself", "## JupyterHub"):
        assert heading in md
    assert "![benchmark plot](benchmarks.png)" in md
    assert (out / "benchmarks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
