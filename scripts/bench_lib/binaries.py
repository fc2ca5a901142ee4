"""The build's binaries a suite needs, or why the suite cannot run."""

import os
import sys


def find(ctx, suite, names):
    """({name: path}, None) when every build/bin/<name> is there; else (None, exit status)
    after saying what is missing: an error (2) when the suite was asked for by name, a skip
    (0) when it runs as part of `all`."""
    bins = {n: os.path.join(ctx.repo_root, "build", "bin", n) for n in names}
    missing = [n for n, p in bins.items() if not os.access(p, os.X_OK)]
    if not missing:
        return bins, None
    msg = f"{suite}: {', '.join(missing)} missing: run scripts/build first"
    if ctx.explicit:
        print(f"bench {msg}", file=sys.stderr)
        return None, 2
    print(f"{msg} (skipped)")
    return None, 0
