"""`scripts/bench agent`: the agent end to end. Starts a private stoked (temp state dir and
socket, stopped by pid), registers an exec-runtime echo function and runs
build/bin/stoke-bench-agent against it: cold invoke p50/p99 as the client sees it, the sandbox
spawn inside it (the activation's initMs), what the agent adds on top, and the API round trip
of a trivial request (status)."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import report

ECHO_ACTION = """#!/bin/sh
# OpenWhisk actionloop echo: one JSON request per stdin line, result on fd 3.
while IFS= read -r line; do
  printf '{"ok":true}\\n' >&3
done
"""


def run(ctx):
    bins = {name: os.path.join(ctx.repo_root, "build", "bin", name) for name in ("stoked", "stoke-bench-agent")}
    missing = [n for n, p in bins.items() if not os.access(p, os.X_OK)]
    if missing:
        msg = f"agent: {', '.join(missing)} missing: run scripts/build first"
        if ctx.explicit:
            print(f"bench {msg}", file=sys.stderr)
            return 2
        print(f"{msg} (skipped)")
        return 0
    work = tempfile.mkdtemp(prefix="stoke-bench-agent-")
    agent = None
    try:
        os.chmod(work, 0o755)
        sock = os.path.join(work, "stoke.sock")
        conf = os.path.join(work, "stoked.conf")
        with open(conf, "w") as f:
            f.write(f'state_dir: "{work}/state"\nsocket_path: "{sock}"\nlog_level: "warn"\n')
        action = os.path.join(work, "echo")
        with open(action, "w") as f:
            f.write(ECHO_ACTION)
        os.chmod(action, 0o755)
        log = open(os.path.join(work, "stoked.log"), "w")
        agent = subprocess.Popen([bins["stoked"], "--config", conf], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        for _ in range(500):
            if os.path.exists(sock):
                break
            time.sleep(0.01)
        else:
            print("bench agent: stoked did not start; see its log:", file=sys.stderr)
            print(open(os.path.join(work, "stoked.log")).read(), file=sys.stderr)
            return 1
        os.makedirs(os.path.dirname(os.path.abspath(ctx.json_path)), exist_ok=True)
        argv = [bins["stoke-bench-agent"], "--socket", sock, "--code", action, "--runs", str(ctx.runs),
                "--json", ctx.json_path]
        print(f"agent: {' '.join(argv)}", file=sys.stderr)
        sys.stdout.flush()
        r = subprocess.run(argv)
        if r.returncode != 0:
            print(f"bench agent: stoke-bench-agent exited with status {r.returncode}", file=sys.stderr)
            print(open(os.path.join(work, "stoked.log")).read()[-2000:], file=sys.stderr)
            return 1
        print(f"(json: {report.rel(ctx.json_path, ctx.repo_root)})")
        return 0
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=20)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        shutil.rmtree(work, ignore_errors=True)
