"""`scripts/bench throughput`: the agent under load. Starts a private stoked (temp state dir
and socket, stopped by pid) and drives a trivial function (`return {"n": args["n"] + 1}`, in
Python or Node) with build/bin/stoke-soak:

  - warm, pipelined: 4 connections x 8 requests in flight (--runs x 100 calls): invocations/s;
  - warm, one at a time: 1 connection, 1 in flight (--runs x 5 calls): the latency of one call;
  - zygote-heavy and restore-heavy: 2 connections x 2 in flight (--runs x 10 calls), each call
    asking for a new instance forked from the function's zygote or restored from its image
    (Python only: zygotes and images are Python's).

Each prints the client's p50/p99, the agent's CPU time per call (/proc/<pid>/stat, all its
threads) and, for the warm shapes, the agent's own time per call as it reports it in its status
(`warmAgentTime`: request decoded to reply handed to the connection, less the runtime's turn
and the wait for a free instance;
p50 over its last 4,096 warm calls; "-" for an agent that does not report it). Client, agent and instances share the machine's cores; the figures are this
machine's, not the agent's alone. STOKE_BENCH_BASE_STOKED=BIN runs the same against another
build of the agent, in the same run (A/B)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from . import binaries, report
from .private_agent import PrivateAgent

SHAPES = [
    # (name, runtime, what each call asks for, connections, in flight per connection, calls per --runs)
    ("python warm 4x8", "python", "warm", 4, 8, 100),
    ("python warm 1x1", "python", "warm", 1, 1, 5),
    ("node warm 4x8", "node", "warm", 4, 8, 100),
    ("node warm 1x1", "node", "warm", 1, 1, 5),
    ("python zygote 2x2", "python", "zygote", 2, 2, 10),
    ("python restore 2x2", "python", "restore", 2, 2, 10),
]


def warm_agent_time(stoke, sock):
    """The agent's own time per warm call (its status), or None when it does not say."""
    r = subprocess.run([stoke, "--socket", sock, "status", "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    w = json.loads(r.stdout).get("warmAgentTime") or {}
    return w if w.get("samples") else None


def measure(stoked, soak, stoke, shape, runs):
    name, runtime, start, connections, in_flight, per_run = shape
    work = tempfile.mkdtemp(prefix="stoke-bench-throughput-")
    os.chmod(work, 0o755)
    agent = PrivateAgent(stoked, work)
    try:
        why = agent.start()
        if why:
            return None, why
        out = os.path.join(work, "soak.json")
        argv = [soak, "--socket", agent.sock, "--pid", str(agent.proc.pid), "--warm", str(runs * per_run),
                "--starts", "0", "--connections", str(connections), "--in-flight", str(in_flight),
                "--start-threads", "1", "--max-growth", "10", "--json", out,
                "--runtime", runtime, "--measured-start", start]
        r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            return None, f"stoke-soak exited with status {r.returncode}: {r.stderr[-2000:]}\n{agent.log_tail()}"
        with open(out) as f:
            res = json.load(f)
        res["agent_time"] = warm_agent_time(stoke, agent.sock) if start == "warm" else None
        return res, None
    finally:
        agent.stop()
        shutil.rmtree(work, ignore_errors=True)


def own(t):
    return "-" if not t else f"{t['p50Us']:.0f}/{t['p99Us']:.0f}"


def run(ctx):
    bins, status = binaries.find(ctx, "throughput", ("stoked", "stoke-soak", "stoke"))
    if bins is None:
        return status
    agents = [("stoke", bins["stoked"])]
    base = os.environ.get("STOKE_BENCH_BASE_STOKED")
    if base:
        agents.append(("base", os.path.abspath(base)))
    results = {}
    print(f"throughput: calls of a trivial function; kernel {os.uname().release}, "
          f"{os.cpu_count()} cpus, load {ctx.loadavg_start[0]:.2f}")
    print(f"  {'agent':<6} {'shape':<19} {'calls':>7} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'agent us/call':>14}"
          f" {'own us p50/p99':>15}")
    for shape in SHAPES:
        for label, stoked in agents:
            res, why = measure(stoked, bins["stoke-soak"], bins["stoke"], shape, ctx.runs)
            if why:
                print(f"bench throughput ({label}, {shape[0]}): {why}", file=sys.stderr)
                return 1
            results.setdefault(shape[0], {})[label] = res
            print(f"  {label:<6} {shape[0]:<19} {res['warm_ok']:>7} {res['warm_per_second']:>9.0f} "
                  f"{res['warm_p50_ms']:>8.3f} {res['warm_p99_ms']:>8.3f} {res['agent_cpu_us_per_warm']:>14.1f} "
                  f"{own(res.get('agent_time')):>15}")
            sys.stdout.flush()
    os.makedirs(os.path.dirname(os.path.abspath(ctx.json_path)), exist_ok=True)
    with open(ctx.json_path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"(json: {report.rel(ctx.json_path, ctx.repo_root)})")
    return 0
