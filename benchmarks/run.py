"""Benchmark deploykit's generated nginx path against configurable-http-proxy and Jupyter direct,
and deploykit's own speed, in one run on loopback. Writes JSON, a Markdown report and a plot.

    .venv/bin/python -m benchmarks.run               # full size, ~8 minutes
    .venv/bin/python -m benchmarks.run --size tiny --out-dir /tmp/bench   # smoke size, ~1 minute

It provisions its own local deployment (a temporary state dir, free ports), starts the
alternatives next to it, measures, and stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SIZES = {
    # duration/warmup in seconds per wrk run; rounds per target; executes per WebSocket path.
    # Short runs, many rounds: on a shared machine, load from elsewhere comes and goes, and
    # rotating short runs spreads it over every path alike.
    "full": {"duration": 6.0, "warmup": 3.0, "rounds": 5, "ws_count": 300, "help_count": 10,
             "reload_count": 5, "spawns": 20},
    "tiny": {"duration": 1.0, "warmup": 0.5, "rounds": 1, "ws_count": 10, "help_count": 2,
             "reload_count": 1, "spawns": 2},
}


def log(text: str) -> None:
    print(text, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=SIZES, default="full")
    p.add_argument("--duration", type=float, help="seconds per wrk run")
    p.add_argument("--rounds", type=int, help="wrk runs per target (the median is reported)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--connections", type=int, default=20, help="wrk connections (default 20)")
    p.add_argument("--ws-count", type=int, help="kernel executes per WebSocket path")
    p.add_argument("--spawns", type=int, help="concurrent JupyterHub spawns (at most 20)")
    p.add_argument("--skip-hub", action="store_true", help="do not measure JupyterHub")
    p.add_argument("--out-dir", type=Path,
                   help="write latest.json, benchmarks.md and benchmarks.png here instead of "
                        "benchmarks/results/ and docs/")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) afterwards")
    p.add_argument("--render-only", action="store_true",
                   help="measure nothing: write the report and plot again from the JSON of the last run")
    p.add_argument("--nice", type=int, default=-10,
                   help="run the benchmark and everything it starts at this niceness (default -10, as root "
                        "only), so other work on a shared machine disturbs the measurements less; 0 to turn off")
    args = p.parse_args(argv)
    size = SIZES[args.size]
    for key in ("duration", "rounds", "ws_count", "spawns"):
        if getattr(args, key) is None:
            setattr(args, key, size[key])
    args.warmup = min(size["warmup"], args.duration)
    args.help_count, args.reload_count = size["help_count"], size["reload_count"]
    if not 1 <= args.spawns <= 20:
        p.error("--spawns must be between 1 and 20")
    if args.duration <= 0 or args.duration > 120 or args.rounds < 1 or args.rounds > 10:
        p.error("--duration must be in (0, 120] and --rounds in [1, 10]")
    return args


def outputs(args) -> tuple[Path, Path, Path]:
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        return args.out_dir / "latest.json", args.out_dir / "benchmarks.md", args.out_dir / "benchmarks.png"
    return ROOT / "benchmarks/results/latest.json", ROOT / "docs/benchmarks.md", ROOT / "docs/benchmarks.png"


def time_help(count: int) -> dict:
    import subprocess

    from benchmarks.deployment import clean_env, deploykit_argv

    runs = []
    for _ in range(count):
        t0 = time.perf_counter()
        res = subprocess.run([*deploykit_argv(), "--help"], capture_output=True, timeout=30, env=clean_env())
        runs.append(time.perf_counter() - t0)
        if res.returncode != 0:
            raise RuntimeError(f"deploykit --help failed: {res.stderr!r}")
    return {"seconds": [round(x, 3) for x in runs], "median_seconds": round(statistics.median(runs), 3),
            "command": " ".join([Path(deploykit_argv()[0]).name, *deploykit_argv()[1:], "--help"]),
            "slowest_imports_ms": import_breakdown()}


def import_breakdown(top: int = 8) -> dict[str, float]:
    """Where `deploykit --help` spends its start-up: the slowest deploykit modules and top-level
    imports, cumulative milliseconds, from `python -X importtime`."""
    import re
    import subprocess

    from benchmarks.deployment import clean_env

    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "deploykit", "--help"], capture_output=True,
                         text=True, timeout=60, env=clean_env())
    entries = []
    for line in res.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m and (not m.group(2) or m.group(3).startswith("deploykit")):
            entries.append((m.group(3), int(m.group(1)) / 1000))
    entries.sort(key=lambda e: -e[1])
    return {name: round(ms, 1) for name, ms in entries[:top]}


def login(bench):
    import re

    import requests

    from benchmarks.deployment import DOMAIN, PASSWORD

    s = requests.Session()
    s.trust_env = False
    s.verify = str(bench.cert)
    base = f"https://{DOMAIN}:{bench.https_port}/"
    page = s.get(base + "login", timeout=30)
    xsrf = s.cookies.get("_xsrf") or re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    res = s.post(base + "login", data={"password": PASSWORD, "_xsrf": xsrf}, allow_redirects=False, timeout=30,
                 headers={"Referer": base + "login", "Origin": base.rstrip("/")})
    if res.status_code != 302:
        raise RuntimeError(f"login failed: {res.status_code}")
    return s


def measure_ws(bench, chp_port: int | None, count: int) -> dict:
    import ssl

    import websocket

    from benchmarks.deployment import DOMAIN
    from benchmarks.load import compare_ws

    s = login(bench)
    origin = f"https://{DOMAIN}:{bench.https_port}"
    headers = {"X-XSRFToken": s.cookies.get("_xsrf", ""), "Referer": origin + "/", "Origin": origin}
    res = s.post(origin + "/api/kernels", json={}, headers=headers, timeout=60)
    res.raise_for_status()
    kernel = res.json()["id"]
    cookie = "; ".join(f"{c.name}={c.value}" for c in s.cookies)
    path = f"/api/kernels/{kernel}/channels"
    # Direct and through CHP the Host is the one nginx passes on: Jupyter names its login cookie after it.
    common = {"cookie": cookie, "origin": origin, "timeout": 30, "header": {"X-XSRFToken": s.cookies.get("_xsrf", "")}}
    sockets = {"nginx (wss, deploykit)": websocket.create_connection(
        f"wss://{DOMAIN}:{bench.https_port}{path}", sslopt={"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(bench.cert)},
        **common)}
    sockets["Jupyter direct (ws)"] = websocket.create_connection(
        f"ws://127.0.0.1:{bench.jupyter_port}{path}", host=f"{DOMAIN}:{bench.https_port}", **common)
    if chp_port:
        sockets["CHP (ws)"] = websocket.create_connection(
            f"ws://127.0.0.1:{chp_port}{path}", host=f"{DOMAIN}:{bench.https_port}", **common)
    try:
        results = compare_ws(sockets, count, warmup=min(20, count))
    finally:
        for ws in sockets.values():
            ws.close()
        s.delete(origin + f"/api/kernels/{kernel}", headers=headers, timeout=30)
    direct = results["Jupyter direct (ws)"]
    for name, r in results.items():
        r["added_p50_ms"] = round(r["p50_ms"] - direct["p50_ms"], 3)
        r["added_p99_ms"] = round(r["p99_ms"] - direct["p99_ms"], 3)
    return {"executes_per_path": count, "code": "x = 1", "paths": results}


def largest_bundle(static_dirs) -> Path | None:
    lab = next((Path(d.root) for d in static_dirs if d.name == "lab"), None)
    if lab is None:
        return None
    return max((p for p in lab.iterdir() if p.suffix == ".js"), key=lambda p: p.stat().st_size)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from benchmarks import report
    from benchmarks.deployment import DOMAIN, Bench
    from benchmarks.load import LoadSettings, Target, compare_http
    from benchmarks.machine import describe_machine, describe_versions
    from deploykit.host import probe_host
    from deploykit.labassets import probe_static_dirs

    json_path, md_path, png_path = outputs(args)
    if args.render_only:
        results = json.loads(json_path.read_text())
        report.add_verdicts(results)
        report.write_plot(results, png_path)
        md_path.write_text(report.render_markdown(results, png_path.name, json_path, md_path))
        log(f"wrote {md_path}, {png_path} from {json_path}")
        return 0
    wrk, chp = shutil.which("wrk"), shutil.which("configurable-http-proxy")
    host = probe_host()
    if not wrk or not host.nginx:
        log("benchmarks need wrk and nginx (scripts/install-deps --test)")
        return 2
    # Inherited by every process started from here on: wrk, the proxies, supervisord and Jupyter.
    nice = args.nice if os.geteuid() == 0 else max(args.nice, 0)
    if nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    started = time.time()
    results: dict = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "size": args.size, "machine": describe_machine(),
        "versions": describe_versions(host.nginx, chp, wrk),
        "settings": {"wrk_threads": args.threads, "wrk_connections": args.connections,
                     "wrk_duration_s": args.duration, "wrk_warmup_s": args.warmup, "rounds": args.rounds,
                     "ws_executes": args.ws_count, "hub_spawns": args.spawns,
                     "niceness": os.getpriority(os.PRIO_PROCESS, 0)},
        "not_measured": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="deploykit-bench-"))
    os.chmod(workdir, 0o700)
    bench = Bench(workdir)
    try:
        log(f"deploykit benchmark ({args.size}) in {workdir}")
        log("  deploykit --help")
        results["help"] = time_help(args.help_count)
        log(f"    median {results['help']['median_seconds']:.3f} s")
        log("  first provision (local target)")
        results["provision"] = bench.provision()
        log(f"    {results['provision']['seconds']:.2f} s; healthy HTTPS after "
            f"{results['provision']['to_healthy_https_seconds']:.2f} s")
        log("  reloads")
        results["reload"] = bench.timed_reloads(args.reload_count)
        log(f"    no-op {results['reload']['noop_seconds']} s; one changed file {results['reload']['one_file_seconds']} s")

        static_dirs = probe_static_dirs(sys.executable)
        plain_port = bench.start_plain_nginx("plain", static_dirs)
        plain_proxied_port = bench.start_plain_nginx("plain-proxied", ())
        chp_port = chp_tls_port = None
        if chp:
            chp_port = bench.start_chp("chp-http", tls=False)
            chp_tls_port = bench.start_chp("chp-https", tls=True)
        else:
            results["not_measured"]["configurable-http-proxy"] = "not installed"
        pids = bench.pids()
        jupyter_pids, nginx_pids = pids["jupyter"], pids["nginx (deployment)"]

        def cpu_groups(target: Target) -> dict:
            groups = {"jupyter": jupyter_pids}
            for name, pid_list in target.cpu.items():
                groups[name] = pid_list
            return groups

        def targets_for(path: str, names: list[str]) -> list[Target]:
            every = {
                "Jupyter direct": Target("Jupyter direct", f"http://127.0.0.1:{bench.jupyter_port}{path}", DOMAIN, {}),
                "nginx HTTPS": Target("nginx HTTPS", f"https://127.0.0.1:{bench.https_port}{path}", DOMAIN,
                                      {"nginx": nginx_pids}),
                "nginx HTTP": Target("nginx HTTP", f"http://127.0.0.1:{plain_port}{path}", DOMAIN,
                                     {"nginx": bench.plain_nginx_pids("plain")}),
                "nginx HTTP, proxied": Target("nginx HTTP, proxied", f"http://127.0.0.1:{plain_proxied_port}{path}",
                                              DOMAIN, {"nginx": bench.plain_nginx_pids("plain-proxied")}),
                # What a browser asks for: nginx compresses on the fly (no .gz files beside the bundles).
                "nginx HTTPS, gzip": Target("nginx HTTPS, gzip", f"https://127.0.0.1:{bench.https_port}{path}", DOMAIN,
                                            {"nginx": nginx_pids}, ("Accept-Encoding: gzip",)),
            }
            if chp_port:
                every["CHP HTTP"] = Target("CHP HTTP", f"http://127.0.0.1:{chp_port}{path}", DOMAIN,
                                           {"chp": [bench.procs["chp-http"].pid]})
                every["CHP HTTPS"] = Target("CHP HTTPS", f"https://127.0.0.1:{chp_tls_port}{path}", DOMAIN,
                                            {"chp": [bench.procs["chp-https"].pid]})
            return [every[n] for n in names if n in every]

        settings = LoadSettings(threads=args.threads, connections=args.connections, duration=args.duration,
                                warmup=args.warmup, rounds=args.rounds)
        log(f"  HTTP /api: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, {args.rounds} round(s)")
        results["api"] = compare_http(wrk, targets_for("/api", ["Jupyter direct", "nginx HTTPS", "nginx HTTP",
                                                                "CHP HTTP", "CHP HTTPS"]), settings, cpu_groups, log)
        bundle = largest_bundle(static_dirs)
        if bundle is None:
            results["not_measured"]["static bundle"] = "no JupyterLab static directory found"
        else:
            path = f"/static/lab/{bundle.name}"
            log(f"  HTTP {path} ({bundle.stat().st_size / 1e6:.2f} MB)")
            results["bundle"] = {"path": path, "bytes": bundle.stat().st_size, "targets": compare_http(
                wrk, targets_for(path, ["Jupyter direct", "nginx HTTPS", "nginx HTTP", "nginx HTTP, proxied",
                                        "nginx HTTPS, gzip"]),
                settings, cpu_groups, log)}
        log(f"  WebSocket: {args.ws_count} executes per path")
        results["websocket"] = measure_ws(bench, chp_port, args.ws_count)
        for name, r in results["websocket"]["paths"].items():
            log(f"    {name:<24} p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  (added p50 {r['added_p50_ms']:+.3f} ms)")
        results["machine"]["load_average_at_end"] = list(os.getloadavg())
    finally:
        bench.stop()
    if args.skip_hub:
        results["not_measured"]["hub"] = "skipped (--skip-hub)"
    else:
        from benchmarks.hub import measure_hub

        log(f"  JupyterHub: first spawn and {args.spawns} concurrent spawns")
        results["hub"] = measure_hub(workdir / "hub", args.spawns, log)
        if not results["hub"].get("measured"):
            results["not_measured"]["hub"] = results["hub"].get("reason", "unknown")
            log(f"    not measured: {results['not_measured']['hub']}")
    results["seconds"] = round(time.time() - started, 1)
    report.add_verdicts(results)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    report.write_plot(results, png_path)
    md_path.write_text(report.render_markdown(results, png_path.name, json_path, md_path))
    log(f"wrote {json_path}, {md_path}, {png_path} ({results['seconds']:.0f} s)")
    for v in results["verdicts"]:
        log(f"  {'met ' if v['met'] else 'MISS'} {v['target']}: {v['measured']}")
    if args.keep:
        log(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
