"""`scripts/bench runtimes`: the start paths of a Python function end to end, the memory of
idle instances, and CRIU restoring the same kind of process, in one run.

Two private stoked agents (temp state dir and socket, each stopped by pid), one after the other:
  - "forked ahead": the default configuration (each function zygote keeps one instance forked
    ahead of demand). Start latency of cold, prewarm, zygote, restore and warm starts.
  - "on-demand fork": `zygotes { forked_ahead: 0 }`, so every zygote start forks. Memory of
    idle zygote-started (1, 16), cold (16) and restored (1, 4, 16) instances, the restore
    image's size on disk, then zygote start latency again.
build/bin/stoke-bench-runtimes does the measuring against each (tests/bench/runtimes_bench.cc)
and writes JSON (it also times the host's own python3, with the same imports and bare, after
each cold call: the reference for the cold and prewarm targets); this file starts the agents,
runs the CRIU peer (criu-peer setup; criu-peer bench N), prints the table and writes
build/bench/runtimes.json.
"""

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from . import binaries, measure, report
from .private_agent import PrivateAgent

IMPORTS = "json, re, decimal, email.parser, http.client"
GAP_MS = 5            # between requests in the paced zygote/restore loops
BLOCKS = 4            # runs are split into blocks; the kinds take turns block by block
PREWARM_RUNS = 60     # at most: each waits for the stem-cell pool to refill
CRIU_RUNS = 50        # at most: criu-peer bench N (each restore also starts bash and unshare)
CRIU_SETUP_TIMEOUT_S = 900
MB = 1024.0           # kB per MB (smaps_rollup counts kB)

TARGETS = {
    "zygote_p50_ms": 1.5, "restore_p50_ms": 2.0, "warm_p50_ms": 0.1, "prewarm_over_init_ms": 3.0,
    "cold_over_host_ms": 1.5, "zygote_uss_mb": 1.0, "restore_pss_mb_16": 2.0, "criu_ratio": 0.2,
}

AGENTS = [
    # (key, label, extra config lines, latency kinds, memory sets)
    ("forked_ahead", "forked ahead", "", "cold,prewarm,zygote,restore,warm", ""),
    ("on_demand", "on-demand fork", "zygotes { forked_ahead: 0 }\n", "zygote", "zygote,cold,restore"),
]


def shared_tools(ctx):
    """<repo>/../shared/tools (the layout of developer machines and CI), or $STOKE_SHARED_TOOLS."""
    return os.environ.get("STOKE_SHARED_TOOLS") or \
        os.path.normpath(os.path.join(ctx.repo_root, "..", "shared", "tools"))


def run(ctx):
    bins, status = binaries.find(ctx, "runtimes", ("stoked", "stoke-bench-runtimes"))
    if bins is None:
        return status
    t_start = time.monotonic()
    warnings = []
    result = {
        "suite": "runtimes",
        "when": None,
        "function": f"Python, imports {IMPORTS}; returns its call count; 128 MiB",
        "config": {"runs": ctx.runs, "warmup_per_block": ctx.warmup, "blocks": BLOCKS,
                   "gap_ms": GAP_MS, "prewarm_runs": min(ctx.runs, PREWARM_RUNS),
                   "timer": "client side, CLOCK_MONOTONIC: Invoke sent -> activation received, "
                            "one connection, one call at a time"},
        "agents": {},
    }

    phases = result["phase_s"] = {}

    for key, label, extra, latency, memory in AGENTS:
        print(f"runtimes: agent '{label}'", file=sys.stderr)
        t = time.monotonic()
        out, err = run_agent(ctx, bins, key, label, extra, latency, memory)
        phases[f"agent_{key}"] = round(time.monotonic() - t, 1)
        if err:
            print(f"bench runtimes: {err}", file=sys.stderr)
            return 1
        result["agents"][key] = out
        if out["agent_log"]["lines"]:
            warnings.append(f"agent '{label}' logged {out['agent_log']['lines']} warning/error "
                            f"line(s), the last: {out['agent_log']['last'][-1][:300]}")

    print("runtimes: CRIU peer", file=sys.stderr)
    t = time.monotonic()
    result["criu"] = criu_peer(ctx)
    phases["criu_peer"] = round(time.monotonic() - t, 1)

    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    result["when"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    result["host"] = report.host_info(ctx)
    result["summary"] = summarize(result)
    result["notes"] = [
        "zygote memory is measured on the on-demand agent (forked_ahead 0), so the function "
        "zygote's children are exactly the idle instances counted",
        "CRIU's time is `criu restore -d` to the restored tree running (timed in bash inside the "
        "peer's chroot, criu's own process start included), after the agents (not interleaved "
        "with stoke's restores); stoke's is a whole activation, request to result",
    ]
    result["warnings"] = warnings
    print_table(result)
    report.write_json(result, ctx.json_path)
    print(f"(json: {report.rel(ctx.json_path, ctx.repo_root)})")
    return 0


# --- one private agent ----------------------------------------------------------------------

def run_agent(ctx, bins, key, label, extra_config, latency, memory):
    """Starts a private stoked, runs stoke-bench-runtimes against it, stops it by pid.
    Returns (the binary's JSON, None) or (None, why it failed)."""
    work = tempfile.mkdtemp(prefix=f"stoke-bench-runtimes-{key}-")
    os.chmod(work, 0o755)
    agent = PrivateAgent(bins["stoked"], work, extra_config)
    try:
        why = agent.start()
        if why:
            return None, f"({label}) {why}"
        out_json = os.path.join(work, "out.json")
        argv = [bins["stoke-bench-runtimes"], "--socket", agent.sock, "--stoked-pid", str(agent.proc.pid),
                "--state-dir", agent.state, "--runs", str(ctx.runs), "--warmup", str(ctx.warmup),
                "--blocks", str(BLOCKS), "--gap-ms", str(GAP_MS),
                "--prewarm-runs", str(min(ctx.runs, PREWARM_RUNS)), "--zygote-mode", label,
                "--json", out_json]
        if latency:
            argv += ["--latency", latency]
        if memory:
            argv += ["--memory", memory]
        print(f"  {' '.join(argv)}", file=sys.stderr)
        r = subprocess.run(argv)
        if r.returncode != 0:
            return None, (f"stoke-bench-runtimes ({label}) exited with status {r.returncode}; "
                          f"stoked's log:\n{agent.log_tail()}")
        with open(out_json) as f:
            out = json.load(f)
        out["agent_config"] = extra_config.strip() or "(defaults)"
        # log_level warn: whatever the agent logged is a warning or an error (a restore that
        # fell back, an image that could not be built...): kept, so a fallback can say why.
        try:
            with open(agent.log, errors="replace") as f:
                logged = [l.rstrip() for l in f if l.strip()]
        except OSError:
            logged = []
        out["agent_log"] = {"lines": len(logged), "last": logged[-10:]}
        return out, None
    finally:
        agent.stop()
        shutil.rmtree(work, ignore_errors=True)


# --- the CRIU peer ---------------------------------------------------------------------------

def criu_peer(ctx):
    """criu-peer setup, then criu-peer bench N: {"p50_ms", "p90_ms", ...} or {"unavailable": why}."""
    tools = shared_tools(ctx)
    peer = os.path.join(tools, "criu-peer")
    out = {"script": peer}
    if not os.access(peer, os.X_OK):
        out["unavailable"] = (f"{peer} not found (set STOKE_SHARED_TOOLS to the directory "
                              "holding criu-peer)")
        return out
    env = dict(measure.CLEAN_ENV)
    for k in ("CRIU_PEER_ROOT", "CRIU_PEER_MIRROR"):
        if os.environ.get(k):
            env[k] = os.environ[k]
    r = _run([peer, "setup"], env, CRIU_SETUP_TIMEOUT_S)
    if r is None or r.returncode != 0:
        out["unavailable"] = "criu-peer setup failed: " + _why(r, CRIU_SETUP_TIMEOUT_S)
        return out
    n = min(ctx.runs, CRIU_RUNS)
    out["n"] = n
    r = _run([peer, "bench", str(n)], env, 60 + n * 2)
    if r is None or r.returncode != 0:
        out["unavailable"] = f"criu-peer bench {n} failed: " + _why(r, 60 + n * 2)
        return out
    line = next((l for l in reversed(r.stdout.splitlines()) if l.startswith("{")), None)
    try:
        data = json.loads(line)
        out.update({"peer": data.get("peer"), "what": data.get("what"), "n": data["n"],
                    "p50_ms": data["restore_ms_p50"], "p90_ms": data["restore_ms_p90"],
                    "image_kb": data.get("image_kb")})
    except (TypeError, ValueError, KeyError):
        out["unavailable"] = f"criu-peer bench printed no result line: {r.stdout.strip()[-300:]!r}"
    return out


def _run(argv, env, timeout):
    try:
        return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired:
        return None
    except OSError as e:
        return subprocess.CompletedProcess(argv, 127, "", f"cannot start: {e.strerror}")


def _why(r, timeout):
    if r is None:
        return f"no exit after {timeout} s"
    lines = [l.strip() for l in (r.stderr + "\n" + r.stdout).splitlines() if l.strip()]
    return f"exit status {r.returncode}" + (": " + " | ".join(lines[-3:]) if lines else "")


# --- figures, targets, table -------------------------------------------------------------------

def _series(result, agent, kind, pattern=""):
    for s in result["agents"].get(agent, {}).get("latency", []):
        if s["kind"] == kind and s["pattern"] == pattern:
            return s
    return None


def _p50(s):
    return s["client_ms"]["p50"] if s and "client_ms" in s else None


def _mem(result, kind, n):
    for m in result["agents"].get("on_demand", {}).get("memory", []):
        if m["kind"] != kind:
            continue
        for p in m.get("points", []):
            if p["instances"] == n and "pss_kb_per_instance" in p:
                return p
    return None


def _check(value, limit):
    if value is None:
        return "n/a"
    return "ok" if value <= limit else "MISSED"


def summarize(result):
    """The figures the issue asks for, with their targets: {name: {value, target, verdict}}."""
    t = TARGETS
    out = {}
    host = _p50(_series(result, "forked_ahead", "host", "imports"))
    cold = _series(result, "forked_ahead", "cold")
    if _p50(cold) is not None and host is not None:
        out["cold_p50_ms"] = {"value": _p50(cold), "target": f"<= host python {host:.2f} + "
                              f"{t['cold_over_host_ms']} ms",
                              "verdict": _check(_p50(cold) - host, t["cold_over_host_ms"])}
    pw = _series(result, "forked_ahead", "prewarm")
    bare = _p50(_series(result, "forked_ahead", "host", "bare"))
    if _p50(pw) is not None and host is not None and bare is not None:
        # The stem cell acknowledges the code before importing it, so initMs leaves the
        # function's own init out; the host's import time (same imports) stands in for it.
        fn_init = max(host - bare, 0.0)
        out["prewarm_p50_ms"] = {"value": _p50(pw), "function_init_estimate_ms": round(fn_init, 3),
                                 "target": f"<= {t['prewarm_over_init_ms']} ms + function init "
                                           f"(host imports {fn_init:.2f})",
                                 "verdict": _check(_p50(pw) - fn_init, t["prewarm_over_init_ms"])}
    for agent in ("forked_ahead", "on_demand"):
        for pattern in ("back-to-back", "paced"):
            s = _series(result, agent, "zygote", pattern)
            out[f"zygote_{agent}_{pattern}_p50_ms"] = {
                "value": _p50(s), "target": f"<= {t['zygote_p50_ms']} ms",
                "verdict": _check(_p50(s), t["zygote_p50_ms"])}
    for pattern in ("back-to-back", "paced"):
        s = _series(result, "forked_ahead", "restore", pattern)
        out[f"restore_{pattern}_p50_ms"] = {"value": _p50(s), "target": f"<= {t['restore_p50_ms']} ms",
                                            "verdict": _check(_p50(s), t["restore_p50_ms"])}
    w = _series(result, "forked_ahead", "warm")
    out["warm_p50_ms"] = {"value": _p50(w), "target": f"<= {t['warm_p50_ms']} ms",
                          "verdict": _check(_p50(w), t["warm_p50_ms"])}
    for n in (1, 16):
        p = _mem(result, "zygote", n)
        v = p["uss_kb_per_instance"] / MB if p else None
        out[f"zygote_uss_mb_per_instance_{n}"] = {"value": v, "target": f"<= {t['zygote_uss_mb']} MB",
                                                  "verdict": _check(v, t["zygote_uss_mb"])}
    p = _mem(result, "restore", 16)
    v = p["pss_kb_per_instance"] / MB if p else None
    out["restore_pss_mb_per_instance_16"] = {"value": v, "target": f"<= {t['restore_pss_mb_16']} MB",
                                             "verdict": _check(v, t["restore_pss_mb_16"])}
    criu = result["criu"].get("p50_ms")
    for pattern in ("paced", "back-to-back"):
        mine = _p50(_series(result, "forked_ahead", "restore", pattern))
        ratio = mine / criu if mine is not None and criu else None
        out[f"restore_{pattern}_over_criu_p50"] = {
            "value": ratio, "target": f"<= {t['criu_ratio']} (stoke >= {1 / t['criu_ratio']:.0f}x faster)",
            "verdict": _check(ratio, t["criu_ratio"])}
    return out


def _fmt(v, nd=3):
    return "-" if v is None else f"{v:.{nd}f}"


def _why_not(s):
    if s is None:
        return "not measured"
    if s.get("not_available"):
        return f"not available: {s['not_available']}"
    if s.get("failed"):
        return f"failed: {s['failed']}"
    if not s.get("n"):
        return "no samples" + (f" (answered by other kinds: {s['fallbacks']})" if s.get("fallbacks") else "")
    return None


def print_table(result):
    h, cfg, summ = result["host"], result["config"], result["summary"]
    print()
    print(f"runtimes: a Python function importing {IMPORTS}; {cfg['runs']} runs per start kind "
          f"in {cfg['blocks']} blocks ({cfg['warmup_per_block']} warm-up calls each), prewarm "
          f"{cfg['prewarm_runs']}; kernel {h['kernel']}, {h['cpus']} cpus, load "
          f"{h['loadavg_start'][0]:.2f} -> {h['loadavg_end'][0]:.2f}, {result['elapsed_s']:.0f} s "
          f"({', '.join(f'{k} {v:.0f}' for k, v in result['phase_s'].items())})")
    print("start latency, client-observed (Invoke sent -> activation received), ms")
    print(f"  {'start kind':<46} {'n':>4} {'p50':>8} {'p99':>8} {'init p50':>9}  target")
    rows = [
        ("cold (start=COLD)", "forked_ahead", "cold", "", "cold_p50_ms"),
        ("prewarm (new function's 1st call, stem cell)", "forked_ahead", "prewarm", "", "prewarm_p50_ms"),
    ]
    for agent, what in (("forked_ahead", "forked ahead (default)"), ("on_demand", "on-demand fork")):
        rows.append((f"zygote, {what}, back-to-back", agent, "zygote", "back-to-back",
                     f"zygote_{agent}_back-to-back_p50_ms"))
        rows.append((f"zygote, {what}, paced {cfg['gap_ms']} ms", agent, "zygote", "paced",
                     f"zygote_{agent}_paced_p50_ms"))
    rows += [
        ("restore, back-to-back", "forked_ahead", "restore", "back-to-back", "restore_back-to-back_p50_ms"),
        (f"restore, paced {cfg['gap_ms']} ms", "forked_ahead", "restore", "paced", "restore_paced_p50_ms"),
        ("warm (default start, same instance)", "forked_ahead", "warm", "", "warm_p50_ms"),
    ]
    for label, agent, kind, pattern, key in rows:
        s = _series(result, agent, kind, pattern)
        why = _why_not(s)
        if why:
            print(f"  {label:<46} {why}")
            continue
        target = summ.get(key)
        tgt = f"{target['target']}  {target['verdict']}" if target else ""
        fb = f"  ({sum(s['fallbacks'].values())} answered by another kind, left out: " \
             f"{s['fallbacks']})" if s.get("fallbacks") else ""
        print(f"  {label:<46} {s['n']:>4} {s['client_ms']['p50']:>8.3f} {s['client_ms']['p99']:>8.3f} "
              f"{s['init_ms']['p50']:>9.3f}  {tgt}{fb}")
    for pattern, label in (("imports", "host python3, same imports (no sandbox)"),
                           ("bare", "host python3 -c pass (no sandbox)")):
        s = _series(result, "forked_ahead", "host", pattern)
        why = _why_not(s)
        if why:
            print(f"  {label:<46} {why}")
        else:
            print(f"  {label:<46} {s['n']:>4} {s['client_ms']['p50']:>8.3f} {s['client_ms']['p99']:>8.3f} "
                  f"{'':>9}  posix_spawn -> exit, after each cold call")
    cold = _p50(_series(result, "forked_ahead", "cold"))
    ratios = []
    for label, s in (("zygote forked ahead", _series(result, "forked_ahead", "zygote", "paced")),
                     ("zygote on-demand", _series(result, "on_demand", "zygote", "paced")),
                     ("restore", _series(result, "forked_ahead", "restore", "paced")),
                     ("warm", _series(result, "forked_ahead", "warm"))):
        if cold and _p50(s):
            ratios.append(f"cold/{label} {cold / _p50(s):.1f}x")
    if ratios:
        print("ratios (p50, paced where both patterns ran): " + ", ".join(ratios))

    print("memory of idle instances: sums of /proc/PID/smaps_rollup (on-demand agent), MB = 1024 kB")
    print(f"  {'instances':<30} {'n':>3} {'PSS':>8} {'PSS/inst':>9} {'USS':>8} {'USS/inst':>9}  target")
    mem = result["agents"].get("on_demand", {}).get("memory", [])
    for m in mem:
        label = {"zygote": "zygote-started", "cold": "cold", "restore": "restored"}[m["kind"]]
        if m.get("not_available") or m.get("failed"):
            why = f"not available: {m['not_available']}" if m.get("not_available") else \
                f"failed: {m['failed']}"
            print(f"  {label:<30} {why}")
            continue
        for p in m["points"]:
            n = p["instances"]
            if "error" in p:
                print(f"  {label:<30} {n:>3} {p['error']}")
                continue
            tgt = ""
            if m["kind"] == "zygote":
                t = summ.get(f"zygote_uss_mb_per_instance_{n}")
                tgt = f"USS/inst {t['target']}  {t['verdict']}" if t else ""
            if m["kind"] == "restore" and n == 16:
                t = summ["restore_pss_mb_per_instance_16"]
                tgt = f"PSS/inst {t['target']}  {t['verdict']}"
            print(f"  {label:<30} {n:>3} {p['pss_kb'] / MB:>8.2f} {p['pss_kb_per_instance'] / MB:>9.2f} "
                  f"{p['uss_kb'] / MB:>8.2f} {p['uss_kb_per_instance'] / MB:>9.2f}  {tgt}")
            if m["kind"] == "zygote" and "function_zygote" in p:
                fz = p["function_zygote"]
                print(f"  {'  + their function zygote':<30} {'':>3} {fz['pss_kb'] / MB:>8.2f} {'':>9} "
                      f"{fz['uss_kb'] / MB:>8.2f} {'':>9}  (instances + zygote PSS "
                      f"{(p['pss_kb'] + fz['pss_kb']) / MB:.2f})")
    imgs = next((m.get("images") for m in mem if m["kind"] == "restore" and m.get("images")), None)
    if not imgs:
        s = _series(result, "forked_ahead", "restore", "back-to-back")
        imgs = s.get("images") if s else None
    for i in imgs or []:
        print(f"  restore image {i['name'][:12]}... ({i.get('function', '?')}): "
              f"{i['bytes'] / 2**20:.2f} MiB, {i['disk_bytes'] / 2**20:.2f} MiB on disk (sparse)")
    if not imgs:
        print("  restore image: none found under the agent's state dir images/")

    c = result["criu"]
    if c.get("unavailable"):
        print(f"CRIU peer: not available: {c['unavailable']}")
    else:
        print(f"CRIU peer ({c.get('peer')}, criu-peer bench {c['n']}): restore p50 {c['p50_ms']:.2f} ms, "
              f"p90 {c['p90_ms']:.2f} ms, image {c.get('image_kb')} kB")
        for pattern in ("paced", "back-to-back"):
            r = summ[f"restore_{pattern}_over_criu_p50"]
            if r["value"] is None:
                why = _why_not(_series(result, "forked_ahead", "restore", pattern)) or "n/a"
                print(f"  stoke restore ({pattern}) p50 / CRIU p50: n/a (stoke restore {why})")
            else:
                print(f"  stoke restore ({pattern}) p50 / CRIU p50: {r['value']:.3f} "
                      f"(stoke {1 / r['value']:.1f}x faster)  target {r['target']}  {r['verdict']}")
    for n in result["notes"]:
        print(f"note: {n}")
    for w in result["warnings"]:
        print(f"WARNING: {w}")
