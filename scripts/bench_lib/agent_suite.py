"""`scripts/bench agent`: the agent end to end. Starts a private stoked (temp state dir and
socket, stopped by pid), registers an exec-runtime echo function and runs
build/bin/stoke-bench-agent against it: cold invoke p50/p99 as the client sees it, the sandbox
spawn inside it (the activation's initMs), what the agent adds on top, and the API round trip
of a trivial request (status)."""

import os
import shutil
import subprocess
import sys
import tempfile

from . import binaries, report
from .private_agent import PrivateAgent

ECHO_ACTION = """#!/bin/sh
# OpenWhisk actionloop echo: one JSON request per stdin line, result on fd 3.
while IFS= read -r line; do
  printf '{"ok":true}\\n' >&3
done
"""


def run(ctx):
    bins, status = binaries.find(ctx, "agent", ("stoked", "stoke-bench-agent"))
    if bins is None:
        return status
    work = tempfile.mkdtemp(prefix="stoke-bench-agent-")
    os.chmod(work, 0o755)
    agent = PrivateAgent(bins["stoked"], work)
    try:
        action = os.path.join(work, "echo")
        with open(action, "w") as f:
            f.write(ECHO_ACTION)
        os.chmod(action, 0o755)
        why = agent.start()
        if why:
            print(f"bench agent: {why}", file=sys.stderr)
            return 1
        os.makedirs(os.path.dirname(os.path.abspath(ctx.json_path)), exist_ok=True)
        argv = [bins["stoke-bench-agent"], "--socket", agent.sock, "--code", action, "--runs", str(ctx.runs),
                "--json", ctx.json_path]
        print(f"agent: {' '.join(argv)}", file=sys.stderr)
        sys.stdout.flush()
        r = subprocess.run(argv)
        if r.returncode != 0:
            print(f"bench agent: stoke-bench-agent exited with status {r.returncode}", file=sys.stderr)
            print(agent.log_tail(), file=sys.stderr)
            return 1
        print(f"(json: {report.rel(ctx.json_path, ctx.repo_root)})")
        return 0
    finally:
        agent.stop()
        shutil.rmtree(work, ignore_errors=True)
