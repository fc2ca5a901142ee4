"""`scripts/bench gateway`: the HTTP gateway against the socket it translates to, in one run.

One private stoked (temp state dir and socket, stopped by pid) with a trivial Python function
(`return {"n": args["n"] + 1}`, concurrency 4), driven two ways, one after the other:

  - over the agent's socket by build/bin/stoke-soak, 4 connections x 8 requests in flight;
  - over HTTP by `wrk` (Debian's), 32 keep-alive connections (the same 32 calls in flight),
    each a blocking invoke with `result=true` through stoke-gateway, authenticated with a
    namespace key;

and prints each one's invocations/s and p50/p99, and the gateway's share of the socket's rate
(the target is 80%). Client, gateway, agent and instances share the machine's cores."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from . import binaries
from .private_agent import PrivateAgent

FUNCTION = 'def main(args):\n    return {"n": args.get("n", 0) + 1}\n'

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"n": 41}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Basic %s"
"""


def wrk_seconds(ctx):
    return max(3, min(30, ctx.runs // 10))


def parse_wrk(text):
    """requests/s, p50 ms, p99 ms, non-2xx count from `wrk --latency` output."""
    def ms(label):
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not m:
            return None
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:.*", text)
    return {"per_second": float(rps.group(1)) if rps else 0.0, "p50_ms": ms("50"), "p99_ms": ms("99"),
            "non_2xx": int(bad.group(1)) if bad else 0, "socket_errors": errors.group(0) if errors else ""}


def run(ctx):
    bins, status = binaries.find(ctx, "gateway", ("stoked", "stoke-soak", "stoke", "stoke-gateway"))
    if bins is None:
        return status
    wrk = shutil.which("wrk")
    if not wrk:
        print("bench gateway: wrk is not installed (scripts/setup installs it)", file=sys.stderr)
        return 2 if ctx.explicit else 0
    work = tempfile.mkdtemp(prefix="stoke-bench-gateway-")
    os.chmod(work, 0o755)
    agent = PrivateAgent(bins["stoked"], work)
    gateway = None
    try:
        why = agent.start()
        if why:
            print(f"bench gateway: {why}", file=sys.stderr)
            return 1
        stoke = [bins["stoke"], "--socket", agent.sock]
        key = re.search(r"^key (\S+)$", subprocess.run(stoke + ["ns", "create", "bench"], capture_output=True,
                                                       text=True, check=True).stdout, re.M).group(1)
        code = os.path.join(work, "inc.py")
        with open(code, "w") as f:
            f.write(FUNCTION)
        subprocess.run(stoke + ["fn", "create", "inc", "--namespace", "bench", "--runtime", "python", "--code", code,
                                "--concurrency", "4"], check=True, stdout=subprocess.DEVNULL)
        log = open(os.path.join(work, "gateway.log"), "w+")
        gateway = subprocess.Popen([bins["stoke-gateway"], "--listen", "127.0.0.1:0", "--socket", agent.sock],
                                   stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        port = None
        for _ in range(500):
            log.seek(0)
            m = re.search(r"serving http on 127\.0\.0\.1:(\d+) ", log.read())
            if m:
                port = m.group(1)
                break
            time.sleep(0.01)
        if not port:
            print("bench gateway: the gateway did not start", file=sys.stderr)
            return 1
        script = os.path.join(work, "post.lua")
        with open(script, "w") as f:
            f.write(WRK_SCRIPT % base64.b64encode(key.encode()).decode())
        url = f"http://127.0.0.1:{port}/api/v1/namespaces/_/actions/inc?blocking=true&result=true"

        print(f"gateway: a trivial Python function, 32 calls in flight; kernel {os.uname().release}, "
              f"{os.cpu_count()} cpus, load {ctx.loadavg_start[0]:.2f}")
        # Socket first: the same shape stoke-soak drives in `bench throughput`.
        out = os.path.join(work, "soak.json")
        calls = ctx.runs * 100
        r = subprocess.run([bins["stoke-soak"], "--socket", agent.sock, "--pid", str(agent.proc.pid), "--warm",
                            str(calls), "--starts", "0", "--connections", "4", "--in-flight", "8",
                            "--start-threads", "1", "--max-growth", "10", "--json", out, "--runtime", "python",
                            "--measured-start", "warm"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            print(f"bench gateway: stoke-soak exited with {r.returncode}: {r.stderr[-1500:]}", file=sys.stderr)
            return 1
        with open(out) as f:
            soak = json.load(f)
        # Warm the gateway's path (its instances and connections) before measuring it.
        subprocess.run([wrk, "-t2", "-c32", "-d2s", "-s", script, url], capture_output=True, text=True)
        w = subprocess.run([wrk, "-t2", "-c32", f"-d{wrk_seconds(ctx)}s", "--latency", "-s", script, url],
                           capture_output=True, text=True)
        http = parse_wrk(w.stdout)
        print(f"  {'path':<28} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        print(f"  {'socket (stoke-soak 4x8)':<28} {soak['warm_per_second']:>9.0f} {soak['warm_p50_ms']:>8.3f} "
              f"{soak['warm_p99_ms']:>8.3f}")
        p50 = f"{http['p50_ms']:.3f}" if http["p50_ms"] is not None else "-"
        p99 = f"{http['p99_ms']:.3f}" if http["p99_ms"] is not None else "-"
        print(f"  {'HTTP (wrk -c32, keep-alive)':<28} {http['per_second']:>9.0f} {p50:>8} {p99:>8}")
        share = http["per_second"] / soak["warm_per_second"] if soak["warm_per_second"] else 0
        print(f"  gateway / socket: {share:.0%} (target 80%)")
        if http["non_2xx"] or http["socket_errors"]:
            print(f"  (wrk: {http['non_2xx']} non-2xx responses; {http['socket_errors']})")
        os.makedirs(os.path.dirname(os.path.abspath(ctx.json_path)), exist_ok=True)
        with open(ctx.json_path, "w") as f:
            json.dump({"socket": soak, "http": http, "share": share}, f, indent=2)
        return 0 if http["per_second"] > 0 and not http["non_2xx"] else 1
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait()
        agent.stop()
        shutil.rmtree(work, ignore_errors=True)
