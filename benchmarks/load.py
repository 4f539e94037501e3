"""Load generators: wrk for HTTP, websocket-client for kernel message round trips.

Every target gets the same client, connections, threads and duration; everything goes to
loopback addresses only, and every run is bounded in time.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from benchmarks.machine import CpuMeter

LUA = Path(__file__).with_name("wrk_json.lua")


@dataclasses.dataclass(frozen=True)
class Target:
    name: str                 # e.g. "nginx (HTTPS)"
    url: str                  # http(s)://127.0.0.1:PORT/path
    host: str                 # Host header Jupyter accepts
    cpu: dict                 # process groups to account: name -> pids (resolved when the run starts)
    headers: tuple = ()       # more request headers, e.g. ("Accept-Encoding: gzip",)


@dataclasses.dataclass(frozen=True)
class LoadSettings:
    threads: int = 2
    connections: int = 20
    duration: float = 10.0
    warmup: float = 2.0
    rounds: int = 3


def run_wrk(wrk: str, target: Target, settings: LoadSettings, duration: float, cpu_groups: dict | None = None) -> dict:
    assert target.url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")), target.url  # loopback only
    argv = [wrk, f"-t{settings.threads}", f"-c{settings.connections}", f"-d{max(duration, 1):g}s",
            "--timeout", "5s", "-s", str(LUA), "-H", f"Host: {target.host}",
            *[arg for h in target.headers for arg in ("-H", h)], target.url]
    meter = CpuMeter(cpu_groups or {})
    meter.start()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, stdin=subprocess.DEVNULL)
    cpu = meter.stop()
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if res.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed against {target.name}: {res.stdout[-500:]} {res.stderr[-500:]}")
    raw = json.loads(line[len("WRK_JSON "):])
    seconds = raw["duration_us"] / 1e6
    errors = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    return {
        "requests": int(raw["requests"]), "seconds": round(seconds, 3),
        "rps": round(raw["requests"] / seconds, 1),
        "mb_per_s": round(raw["bytes"] / seconds / 1e6, 1),
        "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
        "p999_ms": raw["p999_us"] / 1000, "max_ms": raw["max_us"] / 1000, "mean_ms": round(raw["mean_us"] / 1000, 3),
        "errors": int(errors), "non_2xx_3xx": int(raw["status_errors"]), "cpu_percent": cpu,
    }


def summarize(runs: list[dict]) -> dict:
    """The median of each figure over the rounds, plus the spread of throughput."""
    keys = ("rps", "mb_per_s", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")
    out = {k: round(statistics.median(r[k] for r in runs), 3) for k in keys}
    out["rps_min"], out["rps_max"] = min(r["rps"] for r in runs), max(r["rps"] for r in runs)
    out["errors"] = sum(r["errors"] for r in runs)
    out["non_2xx_3xx"] = sum(r["non_2xx_3xx"] for r in runs)
    cpu_keys = runs[0]["cpu_percent"].keys()
    out["cpu_percent"] = {k: round(statistics.median(r["cpu_percent"].get(k, 0) for r in runs), 1) for k in cpu_keys}
    # CPU microseconds per request: unlike throughput, barely moved by other load on the machine.
    out["cpu_us_per_request"] = {
        k: round(statistics.median(r["cpu_percent"].get(k, 0) / 100 * 1e6 / max(r["rps"], 1e-9) for r in runs))
        for k in cpu_keys if k not in ("whole machine", "everything else")}
    out["rounds"] = runs
    return out


def compare_http(wrk: str, targets: list[Target], settings: LoadSettings, resolve_cpu, log) -> dict:
    """Each target once per round, the order rotating each round so drift hits all alike."""
    for t in targets:
        run_wrk(wrk, t, settings, settings.warmup)
    runs: dict[str, list[dict]] = {t.name: [] for t in targets}
    for r in range(settings.rounds):
        order = targets[r % len(targets):] + targets[:r % len(targets)]
        for t in order:
            result = run_wrk(wrk, t, settings, settings.duration, resolve_cpu(t))
            log(f"    round {r + 1}/{settings.rounds} {t.name:<28} {result['rps']:>9.1f} req/s  "
                f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:7.2f} ms")
            runs[t.name].append(result)
    return {name: summarize(rs) for name, rs in runs.items()}


# -- WebSocket round trips ------------------------------------------------------------------

def execute_request(code: str) -> tuple[str, str]:
    msg_id = uuid.uuid4().hex
    return msg_id, json.dumps({
        "header": {"msg_id": msg_id, "username": "bench", "session": uuid.uuid4().hex,
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    })


def round_trip(ws, code: str = "x = 1", timeout: float = 30) -> float:
    """Seconds from sending an execute_request to its execute_reply; then waits for idle."""
    msg_id, text = execute_request(code)
    t0 = time.perf_counter()
    ws.send(text)
    deadline = time.monotonic() + timeout
    rtt = None
    idle = False
    while time.monotonic() < deadline and (rtt is None or not idle):
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "execute_reply" and rtt is None:
            rtt = time.perf_counter() - t0
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
    if rtt is None:
        raise RuntimeError("no execute_reply within the timeout")
    return rtt


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def compare_ws(sockets: dict, count: int, warmup: int = 20) -> dict:
    """Round trips over each socket in turn (same kernel, interleaved), in milliseconds."""
    for _ in range(warmup):
        for ws in sockets.values():
            round_trip(ws)
    rtts: dict[str, list[float]] = {name: [] for name in sockets}
    for _ in range(count):
        for name, ws in sockets.items():
            rtts[name].append(round_trip(ws) * 1000)
    return {name: {"count": len(v), "p50_ms": round(percentile(v, 50), 3), "p90_ms": round(percentile(v, 90), 3),
                   "p99_ms": round(percentile(v, 99), 3), "mean_ms": round(statistics.fmean(v), 3),
                   "min_ms": round(min(v), 3)} for name, v in rtts.items()}
