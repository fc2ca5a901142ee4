"""The printed table, the ratios and the JSON file of a suite."""

import datetime
import json
import os
import re

from . import measure
from .crun_peer import cgroup_layout

NOT_SELECTED = "not selected (--only)"   # left out of the printed table, kept in the JSON


def rel(path, root):
    """path relative to the repo root when it is inside it (for messages)."""
    path = os.path.abspath(path)
    r = os.path.relpath(path, root)
    return path if r.startswith("..") else r


def host_info(ctx):
    try:
        usable = len(os.sched_getaffinity(0))
    except OSError:
        usable = None
    return {
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "cpus_usable": usable,
        "cgroup_layout": cgroup_layout(),
        "loadavg_start": [round(x, 2) for x in ctx.loadavg_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }


def _r(x, nd=4):
    return round(x, nd)


def _why_not(row):
    """'skipped: ...' / 'failed: ...' for a contender without a result, else None."""
    if "skipped" in row:
        return f"skipped: {row['skipped']}"
    if "failed" in row:
        return f"failed: {row['failed']}"
    return None


def build(ctx, suite, contenders, subject, peers, notes, warnings):
    """The suite's result dict (also what goes into the JSON file)."""
    by_name = {}
    for c in contenders:
        if c.ok:
            s = measure.summarize(c.samples_ns)
            by_name[c.name] = {
                "runner": c.runner, "workload": c.workload, "command": c.describe,
                "n": s["n"], "p50_ms": _r(s["p50_ms"]), "p99_ms": _r(s["p99_ms"]),
                "mean_ms": _r(s["mean_ms"]), "min_ms": _r(s["min_ms"]),
                "max_ms": _r(s["max_ms"]),
                "samples_ms": [_r(x / 1e6) for x in c.samples_ns],
            }
        else:
            by_name[c.name] = {"runner": c.runner, "workload": c.workload,
                               "command": c.describe}
            if c.skipped:
                by_name[c.name]["skipped"] = c.skipped
            else:
                by_name[c.name]["failed"] = c.failed

    ratios = {}
    for workload in dict.fromkeys(c.workload for c in contenders):
        mine = by_name.get(f"{subject} {workload}")
        row = {}
        for peer in peers:
            theirs = by_name.get(f"{peer} {workload}")
            key = f"{subject}/{peer}"
            if mine is None or theirs is None:
                continue
            if _why_not(mine):
                row[key] = {"skipped": f"{subject} {_why_not(mine)}"}
            elif _why_not(theirs):
                row[key] = {"skipped": f"{peer} {_why_not(theirs)}"}
            else:
                row[key] = {"p50": _r(mine["p50_ms"] / theirs["p50_ms"], 3),
                            "p99": _r(mine["p99_ms"] / theirs["p99_ms"], 3)}
        ratios[workload] = row

    return {
        "suite": suite,
        "when": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": host_info(ctx),
        "config": {"runs": ctx.runs, "warmup": ctx.warmup, "timeout_s": ctx.timeout,
                   "order": "round-robin over all contenders, start rotating each round",
                   "timer": "os.posix_spawn -> os.waitpid of the whole command, "
                            "CLOCK_MONOTONIC"},
        "contenders": by_name,
        "ratios": ratios,
        "notes": notes,
        "warnings": warnings,
    }


def print_table(result, contenders):
    h = result["host"]
    cfg = result["config"]
    print()
    print(f"{result['suite']}: {cfg['runs']} measured runs per contender after "
          f"{cfg['warmup']} warm-up, round-robin; kernel {h['kernel']}, {h['cpus']} cpus, "
          f"load {h['loadavg_start'][0]:.2f} -> {h['loadavg_end'][0]:.2f}")
    print(f"  {'contender':<16} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
    missing = []
    for c in contenders:
        row = result["contenders"][c.name]
        if row.get("skipped") == NOT_SELECTED:
            continue
        if _why_not(row):
            missing.append((c.name, _why_not(row)))
            continue
        print(f"  {c.name:<16} {row['n']:>5} {row['p50_ms']:>9.3f} {row['p99_ms']:>9.3f} "
              f"{row['mean_ms']:>9.3f}")
    for name, why in missing:
        print(f"  {name:<16} {why}")
    print("ratios (stoke / peer, same workload, same run; < 1 means stoke is faster):")
    for workload, row in result["ratios"].items():
        row = {k: v for k, v in row.items() if not v.get("skipped", "").endswith(NOT_SELECTED)}
        whys = {v.get("skipped") for v in row.values()}
        if len(row) > 1 and len(whys) == 1 and None not in whys:
            # the subject itself has no result: one line for the whole workload
            print(f"  {workload:<7} {'stoke/*':<14} {whys.pop()}")
            continue
        for key, v in row.items():
            if "skipped" in v:
                print(f"  {workload:<7} {key:<14} {v['skipped']}")
            else:
                print(f"  {workload:<7} {key:<14} p50 {v['p50']:6.2f}x   p99 {v['p99']:6.2f}x")
    for n in result["notes"]:
        print(f"note: {n}")
    for w in result["warnings"]:
        print(f"WARNING: {w}")


def write_json(result, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    text = json.dumps(result, indent=1)
    # arrays of plain numbers (samples, load averages) on one line each
    text = re.sub(r"\[\s*([-0-9.eE,\s]+?)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
                  text)
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)
