"""`scripts/bench sandbox`: one-shot sandbox start + exit, stoke against its peers.

Every contender is one (runner, workload) pair; all of them are interleaved round-robin in
the same run, so machine noise hits them equally. See docs/benchmarks.md.
"""

import os
import sys

from . import measure, report
from .crun_peer import CrunLoop

WORKLOADS = {
    "true": ["/bin/true"],
    "python": ["/usr/bin/python3", "-c", "pass"],
}

UNSHARE_FLAGS = ["--pid", "--mount", "--net", "--ipc", "--uts", "--fork"]
# Debian 12 has a merged /usr (/bin -> usr/bin, /lib -> usr/lib, ...): bind /usr read-only
# and recreate the top-level symlinks.
BWRAP_FLAGS = ["--unshare-all", "--ro-bind", "/usr", "/usr",
               "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
               "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
               "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--"]

RUNNERS = ["host", "stoke", "unshare", "bwrap", "crun"]   # table order within a workload
PEERS = ["host", "unshare", "bwrap", "crun"]             # stoke is compared against each


def _local(runner, workload, prefix, spawner, timeout_s):
    argv = prefix + WORKLOADS[workload]
    return measure.Contender(
        runner, workload, " ".join(argv),
        run_once=lambda: spawner.time_ns(argv),
        probe=lambda: measure.probe(argv, timeout_s))


def _skipped(runner, workload, describe, reason):
    return measure.Contender(runner, workload, describe, skipped=reason)


def _stoke_skip(ctx):
    """None if stoke can be measured, else why not."""
    if ctx.only_peers:
        return "--only-peers"
    if not os.access(ctx.stoke_bin, os.X_OK):
        return f"{report.rel(ctx.stoke_bin, ctx.repo_root)} is missing: run scripts/build first"
    return None


def run(ctx):
    """ctx: see scripts/bench (SuiteContext). Returns the exit status."""
    timeout_s = ctx.timeout
    selected = set(ctx.only if ctx.only is not None else RUNNERS)

    # A missing stoke binary is an error when this suite was asked for by name.
    stoke_skip = _stoke_skip(ctx) if "stoke" in selected else report.NOT_SELECTED
    if "stoke" in selected and stoke_skip and not ctx.only_peers and ctx.explicit:
        print(f"bench sandbox: {stoke_skip} (or pass --only-peers to measure the peers alone)",
              file=sys.stderr)
        return 2

    spawner = measure.Spawner(timeout_s)
    crun = CrunLoop(ctx.bench_script, timeout_s)
    warnings = []
    contenders = []
    try:
        print("sandbox: setting up peers...", file=sys.stderr)
        prefixes = {
            "host": ([], None),
            "stoke": ([ctx.stoke_bin, "run", "--"], stoke_skip),
        }
        unshare = measure.which("unshare")
        prefixes["unshare"] = ([unshare or "unshare"] + UNSHARE_FLAGS,
                               None if unshare else "unshare (util-linux) is not installed")
        bwrap = measure.which("bwrap")
        prefixes["bwrap"] = ([bwrap or "bwrap"] + BWRAP_FLAGS, None if bwrap else
                             "bwrap is not installed (apt-get install bubblewrap)")
        crun_skip = crun.start() if "crun" in selected else report.NOT_SELECTED

        for workload in WORKLOADS:
            for runner in RUNNERS:
                if runner == "crun":
                    describe = "crun run (private mount ns, lean bundle): " + \
                        " ".join(WORKLOADS[workload])
                    if crun_skip:
                        contenders.append(_skipped(runner, workload, describe, crun_skip))
                    else:
                        contenders.append(measure.Contender(
                            runner, workload, describe, run_once=crun.runner(workload),
                            probe=crun.prober(workload)))
                    continue
                prefix, skip = prefixes[runner]
                if runner not in selected:
                    skip = report.NOT_SELECTED
                if skip:
                    contenders.append(_skipped(runner, workload,
                                               " ".join(prefix + WORKLOADS[workload]), skip))
                else:
                    contenders.append(_local(runner, workload, prefix, spawner, timeout_s))

        # one checked run each, with stderr captured, so a broken contender says why
        for c in contenders:
            if c.ok:
                err = c.probe()
                if err:
                    c.failed = f"probe run: {err}"

        usable = [c for c in contenders if c.ok]
        print(f"sandbox: {len(usable)} contenders, {ctx.warmup} warm-up + {ctx.runs} measured "
              "rounds, round-robin...", file=sys.stderr)
        measure.run_round_robin(contenders, ctx.runs, ctx.warmup)
    finally:
        warnings += crun.close()
        spawner.close()

    notes = list(crun.notes)
    result = report.build(ctx, "sandbox", contenders, "stoke", PEERS, notes, warnings)
    report.print_table(result, contenders)
    report.write_json(result, ctx.json_path)
    print(f"sandbox: JSON written to {report.rel(ctx.json_path, ctx.repo_root)}")

    stoke_failed = [c for c in contenders if c.runner == "stoke" and c.failed]
    if stoke_failed:
        print("bench sandbox: stoke run failed: "
              + "; ".join(f"{c.name}: {c.failed}" for c in stoke_failed), file=sys.stderr)
        return 1
    return 0
