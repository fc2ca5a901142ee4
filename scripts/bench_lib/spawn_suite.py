"""`scripts/bench spawn`: the library's spawn path alone, measured in one process by the C++
binary build/bin/stoke-bench-spawn (it prints its own table and writes its own JSON)."""

import os
import subprocess
import sys

from . import binaries


def run(ctx):
    bins, status = binaries.find(ctx, "spawn", ("stoke-bench-spawn",))
    if bins is None:
        return status
    binary = bins["stoke-bench-spawn"]
    os.makedirs(os.path.dirname(os.path.abspath(ctx.json_path)), exist_ok=True)
    argv = [binary, "--runs", str(ctx.runs), "--json", ctx.json_path]
    print(f"spawn: {' '.join(argv)}", file=sys.stderr)
    sys.stdout.flush()
    r = subprocess.run(argv)
    if r.returncode != 0:
        print(f"bench spawn: stoke-bench-spawn exited with status {r.returncode}",
              file=sys.stderr)
        return 1
    return 0
