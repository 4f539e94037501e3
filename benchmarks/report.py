"""Turn a benchmark run into verdicts against the targets, a Markdown report and a PNG plot."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The targets of issue 9, checked against what this run measured.
HELP_MAX_S = 0.3
NOOP_RELOAD_MAX_S = 1.0
PROVISION_MAX_S = 15.0
WS_ADDED_P50_MAX_MS = 1.0
API_MIN_RATIO = 0.90
BUNDLE_MIN_RATIO = 3.0


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _api_ceiling(r: dict, name: str) -> float:
    """Throughput ratio to direct that the CPU per request allows with nothing else running."""
    cores = r["machine"]["cores"]
    d, n = r["api"]["Jupyter direct"], r["api"][name]
    direct = min(1e6 / max(_us(d, "jupyter"), 1), cores * 1e6 / max(_us(d, "jupyter") + _us(d, "load generator"), 1))
    need = _us(n, "jupyter") + _us(n, "nginx") + _us(n, "load generator")
    return min(1e6 / max(_us(n, "jupyter"), 1), cores * 1e6 / max(need, 1)) / direct


def _verdict(target: str, measured: str, met: bool, miss: str = "") -> dict:
    return {"target": target, "measured": measured, "met": bool(met), "miss": "" if met else miss}


def add_verdicts(r: dict) -> None:
    out = []
    api = r.get("api", {})
    direct = api.get("Jupyter direct")
    for name, chp_name in (("nginx HTTPS", "CHP HTTPS"), ("nginx HTTP", "CHP HTTP")):
        t = api.get(name)
        if not (t and direct):
            continue
        ratio = t["rps"] / direct["rps"]
        other = t["cpu_percent"].get("everything else", 0)
        out.append(_verdict(f"/api through {name}: at least {API_MIN_RATIO:.0%} of direct throughput",
                            f"{ratio:.1%} ({t['rps']:.0f} vs {direct['rps']:.0f} req/s)", ratio >= API_MIN_RATIO,
                            f"{API_MIN_RATIO - ratio:.1%} short; Jupyter's one thread shares {r['machine']['cores']} "
                            f"cores with nginx, wrk and other load ({other:.0f}% of a core during these runs); the "
                            f"CPU per request alone would allow about {_api_ceiling(r, name):.0%} (see Where the "
                            "time goes)"))
        chp = api.get(chp_name)
        if chp:
            out.append(_verdict(f"/api through {name}: p99 no worse than {chp_name}'s",
                                f"{t['p99_ms']:.2f} ms vs {chp['p99_ms']:.2f} ms", t["p99_ms"] <= chp["p99_ms"],
                                f"{t['p99_ms'] - chp['p99_ms']:.2f} ms worse"))
    bundle = r.get("bundle", {}).get("targets", {})
    jd = bundle.get("Jupyter direct")
    cores = r["machine"]["cores"]
    for name in ("nginx HTTP", "nginx HTTPS"):
        t = bundle.get(name)
        if not (t and jd):
            continue
        ratio = t["rps"] / jd["rps"]
        ceiling = (cores * 1e6 / max(_us(t, "nginx") + _us(t, "load generator"), 1)) / (1e6 / max(_us(jd, "jupyter"), 1))
        out.append(_verdict(f"largest bundle through {name}: at least {BUNDLE_MIN_RATIO:g}x Jupyter's throughput",
                            f"{ratio:.1f}x ({t['rps']:.0f} vs {jd['rps']:.0f} req/s)", ratio >= BUNDLE_MIN_RATIO,
                            f"{BUNDLE_MIN_RATIO - ratio:.1f}x short; with wrk on the same {cores} cores the CPU "
                            f"per request caps it near {ceiling:.1f}x here (see Where the time goes)"))
        out.append(_verdict(f"largest bundle through {name}: lower p99 than Jupyter's",
                            f"{t['p99_ms']:.1f} ms vs {jd['p99_ms']:.1f} ms", t["p99_ms"] < jd["p99_ms"],
                            f"{t['p99_ms'] - jd['p99_ms']:.1f} ms higher"))
    ws = r.get("websocket", {}).get("paths", {}).get("nginx (wss, deploykit)")
    if ws:
        out.append(_verdict(f"WebSocket through nginx (TLS): added p50 under {WS_ADDED_P50_MAX_MS:g} ms",
                            f"{ws['added_p50_ms']:+.3f} ms (p99 {ws['added_p99_ms']:+.3f} ms)",
                            ws["added_p50_ms"] < WS_ADDED_P50_MAX_MS,
                            f"{ws['added_p50_ms'] - WS_ADDED_P50_MAX_MS:.3f} ms over"))
    if "help" in r:
        h = r["help"]["median_seconds"]
        out.append(_verdict(f"deploykit --help under {HELP_MAX_S:g} s", f"{h:.3f} s (median)", h < HELP_MAX_S,
                            f"{h - HELP_MAX_S:.3f} s over"))
    if "reload" in r:
        n = _median(r["reload"]["noop_seconds"])
        out.append(_verdict(f"no-op reload under {NOOP_RELOAD_MAX_S:g} s", f"{n:.3f} s (median)",
                            n < NOOP_RELOAD_MAX_S, f"{n - NOOP_RELOAD_MAX_S:.3f} s over"))
    if "provision" in r:
        p = r["provision"]["to_healthy_https_seconds"]
        out.append(_verdict(f"local provision to healthy HTTPS under {PROVISION_MAX_S:g} s", f"{p:.2f} s",
                            p < PROVISION_MAX_S, f"{p - PROVISION_MAX_S:.2f} s over"))
    r["verdicts"] = out


# -- Markdown -------------------------------------------------------------------------------

def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _cpu(t: dict) -> str:
    us = t.get("cpu_us_per_request", {})
    names = {"jupyter": "jupyter", "nginx": "nginx", "chp": "chp", "load generator": "wrk"}
    text = ", ".join(f"{names[k]} {us[k]:,.0f}" for k in names if k in us)
    return f"{text} (other load {t['cpu_percent'].get('everything else', 0):.0f}%)"


def _http_table(targets: dict, base: str, lines: list[str]) -> None:
    lines.append(_row(["path", "req/s (median)", "range over rounds", f"vs {base}", "p50 ms", "p90 ms", "p99 ms",
                       "p99.9 ms", "MB/s", "errors", "CPU µs per request"]))
    lines.append(_row(["---"] + ["---:"] * 9 + ["---"]))
    b = targets.get(base)
    for name, t in targets.items():
        ratio = f"{t['rps'] / b['rps']:.2f}x" if b else "-"
        lines.append(_row([name, f"{t['rps']:.0f}", f"{t['rps_min']:.0f}-{t['rps_max']:.0f}", ratio,
                           f"{t['p50_ms']:.2f}", f"{t['p90_ms']:.2f}", f"{t['p99_ms']:.2f}", f"{t['p999_ms']:.2f}",
                           f"{t['mb_per_s']:.1f}", t["errors"] + t["non_2xx_3xx"], _cpu(t)]))


def _rel(path: Path, md_path: Path) -> str:
    try:
        return os.path.relpath(path, md_path.parent)
    except ValueError:
        return str(path)


def render_markdown(r: dict, png_name: str, json_path: Path, md_path: Path) -> str:
    m, s = r["machine"], r["settings"]
    L = ["# deploykit benchmarks", "",
         f"Generated by `{r['command'].strip()}` on {r['started']} ({r['size']} size, {r['seconds']:.0f} s). "
         "Do not edit by hand: run the command again. Raw numbers: "
         f"[{json_path.name}]({_rel(json_path, md_path)}).", "",
         "Everything runs on this one machine over loopback: the benchmark provisions its own local "
         "deployment (deploykit's generated nginx, TLS, supervisord, Jupyter Server), starts "
         "configurable-http-proxy and a second nginx (deploykit's own `tls = off` rendering of the same site) "
         "in front of the same Jupyter, and loads each path with the same client, connections and duration. "
         "The load generator shares the CPUs with the servers it measures, so absolute numbers are lower "
         "than on a dedicated client; the ratios between paths measured in the same run are the result. "
         f"Everything the benchmark starts runs at niceness {s.get('niceness', 0)}, so that other work on a "
         "shared machine disturbs it less.", "",
         f"![benchmark plot]({png_name})", "",
         "## Machine", "",
         _row(["CPU", "cores", "memory", "OS", "kernel", "virtualization", "load average (1/5/15 min) start -> end"]),
         _row(["---"] * 7),
         _row([m["cpu"], m["cores"], f"{m['memory_gib']} GiB", m["os"], m["kernel"], m.get("virtualization", "?"),
               " / ".join(f"{x:.2f}" for x in m["load_average_at_start"]) + " -> " +
               " / ".join(f"{x:.2f}" for x in m.get("load_average_at_end", [])) ]), "",
         "## Versions", "",
         ", ".join(f"{k} {v}" for k, v in r["versions"].items()), "",
         "## Targets", "",
         _row(["target", "measured", "met?"]), _row(["---", "---", "---"])]
    for v in r.get("verdicts", []):
        L.append(_row([v["target"], v["measured"], "yes" if v["met"] else f"**no**: {v['miss']}"]))
    for what, why in r.get("not_measured", {}).items():
        L.append(_row([what, "not measured", why]))
    L += ["", "## HTTP: Jupyter's `/api` (no login needed)", "",
          f"`wrk -t{s['wrk_threads']} -c{s['wrk_connections']} -d{s['wrk_duration_s']:g}s` per path, "
          f"{s['rounds']} round(s) in rotating order after a {s['wrk_warmup_s']:g} s warm-up; medians over the "
          "rounds. nginx HTTPS is the deployment itself; nginx HTTP is the same generated site with TLS off; "
          "CHP is configurable-http-proxy in front of the same Jupyter (HTTPS with the deployment's certificate). "
          "CPU per request is each process group's CPU time during a run divided by the requests served; "
          f"\"other load\" is what the rest of the machine used meanwhile (100% = one of its {m['cores']} cores).", ""]
    if "api" in r:
        _http_table(r["api"], "Jupyter direct", L)
    if "bundle" in r:
        b = r["bundle"]
        L += ["", f"## JupyterLab's largest bundle (`{b['path']}`, {b['bytes'] / 1e6:.2f} MB)", "",
              "Served by nginx from the environment's `share/jupyter/lab/static/` (`http.static_assets = true`, "
              "the default) versus Jupyter's own static handler. \"nginx HTTP, proxied\" is the same nginx with "
              "`static_assets = false`, i.e. what every deployment did before. No `Accept-Encoding`, so every "
              "path sends the same bytes, except \"nginx HTTPS, gzip\": what a browser asks for, compressed on "
              "the fly, shown for its CPU cost and not comparable byte for byte.", ""]
        _http_table(b["targets"], "Jupyter direct", L)
    if "websocket" in r:
        w = r["websocket"]
        L += ["", "## WebSocket: kernel message round trips", "",
              f"{w['executes_per_path']} `execute_request`s (`{w['code']}`) per path, interleaved over the "
              "paths on one kernel, timed from send to `execute_reply`. Added = this path minus direct.", "",
              _row(["path", "p50 ms", "p90 ms", "p99 ms", "mean ms", "added p50 ms", "added p99 ms"]),
              _row(["---"] + ["---:"] * 6)]
        for name, p in w["paths"].items():
            L.append(_row([name, f"{p['p50_ms']:.3f}", f"{p['p90_ms']:.3f}", f"{p['p99_ms']:.3f}",
                           f"{p['mean_ms']:.3f}", f"{p['added_p50_ms']:+.3f}", f"{p['added_p99_ms']:+.3f}"]))
    L += ["", "## deploykit itself", "", _row(["command", "seconds", "detail"]), _row(["---", "---:", "---"])]
    if "help" in r:
        h = r["help"]
        L.append(_row([f"`{h['command']}`", f"{h['median_seconds']:.3f} (median)",
                       "runs: " + ", ".join(f"{x:.3f}" for x in h["seconds"]) + "; slowest imports (cumulative ms): " +
                       ", ".join(f"{k} {v:.0f}" for k, v in h.get("slowest_imports_ms", {}).items())]))
    if "provision" in r:
        p = r["provision"]
        L.append(_row(["first `provision --target local` (packages installed)", f"{p['seconds']:.2f}",
                       f"healthy HTTPS after {p['to_healthy_https_seconds']:.2f} s; steps: " +
                       ", ".join(f"{k} {v:.2f}" for k, v in p["steps"].items())]))
    if "reload" in r:
        rl = r["reload"]
        L.append(_row(["no-op `reload`", f"{_median(rl['noop_seconds']):.3f} (median)",
                       "runs: " + ", ".join(f"{x:.3f}" for x in rl["noop_seconds"]) + "; steps of the last: " +
                       ", ".join(f"{k} {v:.2f}" for k, v in rl.get("noop_steps", {}).items())]))
        L.append(_row(["`reload` with one changed file (`http.upload_limit`: the nginx site changes, nginx reloads)",
                       f"{_median(rl['one_file_seconds']):.3f} (median)",
                       "steps of the last: " + ", ".join(f"{k} {v:.2f}" for k, v in rl["one_file_steps"].items())]))
    L += ["", "## JupyterHub behind nginx", ""]
    hub = r.get("hub", {})
    if hub.get("measured"):
        L += [_row(["measure", "seconds"]), _row(["---", "---:"]),
              _row(["first spawn (login to the user's server answering through nginx)", f"{hub['first_spawn_s']:.2f}"]),
              _row([f"{hub['concurrent']} concurrent spawns, all answering", f"{hub['concurrent_all_s']:.2f}"]),
              _row([f"{hub['concurrent']} concurrent spawns, median user", f"{hub['concurrent_median_s']:.2f}"])]
        L += ["", "A hub deployment of its own (shared-password authenticator, localprocess spawner: each new user "
              "also gets a system account on first spawn). Each user logs in through nginx over HTTPS, asks for "
              "a server the way a browser does (`hub/spawn`) and is timed until the server answers `/api` through "
              f"nginx. The concurrent users start at the same moment: {hub['concurrent']} Python servers importing "
              f"Jupyter Server and JupyterLab at once on {r['machine']['cores']} cores, about "
              f"{hub['concurrent_all_s'] / hub['concurrent']:.1f} s of wall time per server."]
    else:
        L.append(f"**Not measured**: {hub.get('reason', r.get('not_measured', {}).get('hub', 'not run'))}")
    L += ["", "## Where the time goes", ""] + analysis(r)
    L += ["", "## Reproduce", "", "```", "sudo ./scripts/install-deps --test   # nginx, wrk, configurable-http-proxy, matplotlib",
          ".venv/bin/python -m benchmarks.run   # about 8 minutes; --size tiny for a quick check", "```", ""]
    return "\n".join(L)


def _us(t: dict, key: str) -> float:
    return t.get("cpu_us_per_request", {}).get(key, 0)


def analysis(r: dict) -> list[str]:
    """What limits the numbers of this run, from the CPU each process group spent per request.

    CPU per request hardly moves with other load on the machine, unlike throughput and tails.
    """
    out = []
    cores = r["machine"]["cores"]
    api = r.get("api", {})
    d = api.get("Jupyter direct")
    if d:
        j = _us(d, "jupyter")
        out.append(f"- **`/api` is bound by Jupyter's single Python thread.** Jupyter spends {j:.0f} µs of CPU "
                   f"per request, so one core caps it near {1e6 / max(j, 1):,.0f} req/s whatever is in front of it.")
        costs = []
        for name, t in api.items():
            if name == "Jupyter direct":
                continue
            proxy = _us(t, "nginx") or _us(t, "chp")
            costs.append(f"{name} {proxy:.0f} µs")
        out.append("- What each proxy costs per request (its own CPU; wrk's is extra): " + ", ".join(costs) +
                   ". configurable-http-proxy (Node.js) spends several times nginx's CPU per request, "
                   "which is where its longer tail comes from once the cores are busy.")
        for name in ("nginx HTTPS", "nginx HTTP"):
            n = api.get(name)
            if not n:
                continue
            need = _us(n, "jupyter") + _us(n, "nginx") + _us(n, "load generator")
            out.append(
                f"- Through {name} a request costs {need:.0f} µs of CPU in all (Jupyter {_us(n, 'jupyter'):.0f}, "
                f"nginx {_us(n, 'nginx'):.0f}, wrk {_us(n, 'load generator'):.0f}). With the load generator on the "
                f"same {cores} cores and nothing else running, that allows about {_api_ceiling(r, name):.0%} of "
                "direct: Jupyter stays the bottleneck, and while the cores are full every cycle nginx or wrk takes "
                "is one Jupyter cannot have. A real client runs on another machine.")
        behind = [_us(t, "jupyter") for name, t in api.items() if name != "Jupyter direct" and _us(t, "jupyter")]
        if behind and j:
            extra = statistics.median(behind) - j
            out.append(
                f"- Behind any proxy Jupyter itself spends about {extra:.0f} µs more per request ({extra / j:+.0%}). "
                "Much of it is the forwarded headers (client address and scheme, which Jupyter needs for its "
                "logs, redirects and secure cookies): sending the same four headers straight to Jupyter cost it "
                "about 10 µs per request in a separate measurement on this machine. On its single core that "
                "comes straight off the top.")
        other = max(v["cpu_percent"].get("everything else", 0) for v in api.values())
        if other > 20:
            out.append(f"- **This machine was not idle**: other processes took up to {other:.0f}% of a core "
                       f"(of {cores * 100}%) during the `/api` runs. Throughput and tails moved with them (see "
                       "the range over rounds) much more than the CPU per request did.")
    b = r.get("bundle", {}).get("targets", {})
    if b.get("Jupyter direct") and b.get("nginx HTTPS") and b.get("nginx HTTP"):
        jd, nh, np_ = b["Jupyter direct"], b["nginx HTTPS"], b["nginx HTTP"]
        j = _us(jd, "jupyter")
        tls_need = _us(nh, "nginx") + _us(nh, "load generator")
        plain_need = _us(np_, "nginx") + _us(np_, "load generator")
        out.append(
            f"- **The bundle** ({r['bundle']['bytes'] / 1e6:.1f} MB): Jupyter spends {j:.0f} µs per request in Python "
            f"(ceiling ~{1e6 / max(j, 1):,.0f} req/s on its one core). Over plain HTTP nginx sends it with sendfile "
            f"({_us(np_, 'nginx'):.0f} µs: over loopback the kernel's copy into the receiving socket is charged to "
            f"it) and wrk reading it costs {_us(np_, 'load generator'):.0f} µs: ceiling "
            f"~{cores * 1e6 / max(plain_need, 1):,.0f} req/s, "
            f"{(cores * 1e6 / max(plain_need, 1)) / (1e6 / max(j, 1)):.1f}x Jupyter's. Over HTTPS nginx must encrypt it "
            f"({_us(nh, 'nginx'):.0f} µs) and wrk decrypt it ({_us(nh, 'load generator'):.0f} µs) on the same cores: "
            f"ceiling ~{cores * 1e6 / max(tls_need, 1):,.0f} req/s, about "
            f"{(cores * 1e6 / max(tls_need, 1)) / (1e6 / max(j, 1)):.1f}x Jupyter's. So 3x cannot be shown with "
            "the client on this box, least of all over HTTPS; a browser reads and decrypts on its own machine, "
            "where nginx's share alone would allow "
            f"{(cores * 1e6 / max(_us(nh, 'nginx'), 1)) / (1e6 / max(j, 1)):.1f}x (HTTPS) and "
            f"{(cores * 1e6 / max(_us(np_, 'nginx'), 1)) / (1e6 / max(j, 1)):.1f}x (HTTP).")
    g = b.get("nginx HTTPS, gzip")
    if g:
        out.append(
            f"- With `Accept-Encoding: gzip` (every browser) nginx compresses the bundle on the fly: "
            f"{_us(g, 'nginx') / 1000:.1f} ms of CPU per download, for {g['mb_per_s'] / max(g['rps'], 1e-9):.2f} MB "
            f"sent instead of {r['bundle']['bytes'] / 1e6:.2f}. Browsers keep the hashed bundles for a year "
            "(`immutable`), so each user pays this once per JupyterLab version. `gzip_static` is used when "
            ".gz files lie beside the bundles; deploykit does not write into the Python environment to make them.")
    ws = r.get("websocket", {}).get("paths", {})
    if ws.get("nginx (wss, deploykit)") and ws.get("Jupyter direct (ws)"):
        out.append(
            f"- **WebSocket**: nginx adds {ws['nginx (wss, deploykit)']['added_p50_ms']:+.3f} ms at p50 (TLS "
            f"included) to a round trip of {ws['Jupyter direct (ws)']['p50_ms']:.2f} ms direct; the rest is Jupyter "
            "relaying the message to the kernel over ZeroMQ and the kernel running it.")
        if ws["Jupyter direct (ws)"]["p50_ms"] > 30:
            out.append(
                "- Most of that round trip is not work: Jupyter Server does not set `TCP_NODELAY` on kernel "
                "WebSockets, so its second small frame of a reply waits for the client's delayed ACK (40 ms on "
                "Linux), direct and behind any proxy alike. Measured separately on this machine: about 48 ms "
                "p50 without it and 4 ms with `set_nodelay(True)` on the handler. nginx's own hop to the browser "
                "has `tcp_nodelay` on by default.")
        else:
            out.append(
                "- The round trip is short because deploykit's generated Jupyter config (Notebook and every hub "
                "user's server) turns on `TCP_NODELAY` for kernel WebSockets: Jupyter Server leaves Nagle's "
                "algorithm on, and each reply's second small frame then waits for the peer's delayed ACK "
                "(about 48 ms per round trip on this machine before the change).")
    h = r.get("help")
    if h and h["median_seconds"] >= HELP_MAX_S:
        imports = h.get("slowest_imports_ms", {})
        out.append(
            f"- **`deploykit --help`** took {h['median_seconds']:.3f} s; Python's own start-up is a few tens of ms, "
            "the rest is imports: " + ", ".join(f"`{k}` {v:.0f} ms" for k, v in imports.items()) +
            " (cumulative, nested). Modules imported at start-up that pull in Jinja2, cryptography or "
            "jupyter_client (e.g. a command module importing `deploykit.kernels`/`deploykit.desired` at the top) "
            "are what to move inside the commands.")
    rl = r.get("reload")
    if rl and _median(rl["noop_seconds"]) >= NOOP_RELOAD_MAX_S:
        steps = rl.get("noop_steps", {})
        out.append(
            f"- **No-op `reload`** took {_median(rl['noop_seconds']):.3f} s, of which deploykit's own render step "
            f"(building the desired state, reading files and daemon state) was {steps.get('render', 0):.2f} s; the "
            "rest is interpreter start-up and imports as for `--help`.")
    out.append(
        "- Already in the generated config for the proxy path (`deploykit/templates/nginx/`): upstream keepalive "
        "with `Connection` cleared for non-upgrade requests (no TCP handshake to Jupyter per request), "
        "`proxy_buffering off`, and the TLS session cache. Tried here and left out because the CPU per request "
        "did not move: a buffered access log (nginx spent the same µs per request with the log off), one worker "
        "instead of one per core, and `proxy_buffering on`.")
    return out


# -- plot -----------------------------------------------------------------------------------

def write_plot(r: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    if "api" in r:
        panels.append(("/api throughput (req/s)", {k: v["rps"] for k, v in r["api"].items()}, None))
        panels.append(("/api latency p99 (ms)", {k: v["p99_ms"] for k, v in r["api"].items()},
                       {k: v["p50_ms"] for k, v in r["api"].items()}))
    if "bundle" in r:
        t = r["bundle"]["targets"]
        panels.append((f"largest bundle ({r['bundle']['bytes'] / 1e6:.1f} MB) req/s", {k: v["rps"] for k, v in t.items()}, None))
    if "websocket" in r:
        w = r["websocket"]["paths"]
        panels.append(("WebSocket round trip p99 (ms)", {k: v["p99_ms"] for k, v in w.items()},
                       {k: v["p50_ms"] for k, v in w.items()}))
    own, goals = {}, {}
    if "help" in r:
        own["deploykit --help"], goals["deploykit --help"] = r["help"]["median_seconds"], HELP_MAX_S
    if "reload" in r:
        own["no-op reload"], goals["no-op reload"] = _median(r["reload"]["noop_seconds"]), NOOP_RELOAD_MAX_S
        own["reload, one file changed"] = _median(r["reload"]["one_file_seconds"])
    if "provision" in r:
        own["provision to healthy HTTPS"] = r["provision"]["to_healthy_https_seconds"]
        goals["provision to healthy HTTPS"] = PROVISION_MAX_S
    hub = r.get("hub", {})
    if hub.get("measured"):
        own["hub: first spawn"] = hub["first_spawn_s"]
        own[f"hub: {hub['concurrent']} concurrent spawns"] = hub["concurrent_all_s"]
    if own:
        panels.append(("deploykit itself (seconds, log scale; | = target)", own, None))
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.3 * len(panels) + 0.6), squeeze=False)
    for ax, (title, values, p50) in zip(axes[:, 0], panels):
        if values is own:
            ax.set_xscale("log")
            for i, name in enumerate(values):
                if name in goals:
                    ax.plot([goals[name]] * 2, [i - 0.45, i + 0.45], color="#c0392b", linewidth=2)
        names = list(values)
        colors = ["#5b8c5a" if values is own else "#888888" if "direct" in n else "#2a7ab9" if "nginx" in n
                  else "#d9822b" for n in names]
        ax.barh(names, [values[n] for n in names], color=colors)
        if p50:
            ax.barh(names, [p50[n] for n in names], color="none", edgecolor="black", hatch="//", linewidth=0.6,
                    label="p50")
            ax.legend(loc="lower right", fontsize=7)
        for i, n in enumerate(names):
            ax.text(values[n], i, f" {values[n]:.2f}" if values is own else f" {values[n]:,.1f}", va="center", fontsize=7)
        ax.set_title(title, fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        ax.invert_yaxis()
        ax.margins(x=0.15)
    m = r["machine"]
    fig.suptitle(f"deploykit benchmarks, {m['cores']} cores {m['cpu']}, {r['started'][:10]} (higher req/s, lower ms "
                 "is better)", fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
