"""`scripts/bench spawn`: the library's spawn path alone, measured in one process by the C++
binary build/bin/stoke-bench-spawn (it prints its own table and writes its own JSON)."""

import os
import subprocess
import sys

from . import report


def run(ctx):
    binary = os.path.join(ctx.repo_root, "build", "bin", "stoke-bench-spawn")
    if not os.access(binary, os.X_OK):
        msg = f"spawn: {report.rel(binary, ctx.repo_root)} is missing: run scripts/build first"
        if ctx.explicit:
            print(f"bench {msg}", file=sys.stderr)
            return 2
        print(f"{msg} (skipped)")
        return 0
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
