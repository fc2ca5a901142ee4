"""`scripts/bench shims`: what the Python and Node runtime shims themselves cost per call.

Each runtime runs as a plain process (no sandbox, no agent) on a trivial function
(`return {"n": args["n"] + 1}`) and is driven over its own protocol (docs/runtime-protocol.md):
a request line on stdin, a result line on fd 3, the end-of-activation sentinel on stdout and
stderr (one pipe, as the agent gives them). --runs x 100 calls, one at a time, harness and runtime on one CPU. Beside each shim, in the same run, the floor: the
same interpreter in a loop that reads a line and writes one on fd 3 and does nothing else.

Per call it prints the CPU time of the runtime process (all its threads,
/proc/<pid>/task/*/schedstat: nanoseconds, not ticks; read before and after each call while the
runtime waits for the next request; p50 and mean) and the round trip (this harness included,
for reference). The shim's own cost is its CPU per call (p50) less the floor's. STOKE_BENCH_BASE_RUNTIMES=DIR
(a tree's runtimes/ directory) measures another version of the shims in the same run (A/B)."""

import json
import os
import select
import shutil
import sys
import tempfile
import time

from . import report

PYTHON = "/usr/bin/python3"
NODE = "/usr/bin/node"
SENTINEL = b"XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n"

FUNCTIONS = {
    "python": ("main.py", 'def main(args):\n    return {"n": args.get("n", 0) + 1}\n'),
    "node": ("main.js", "function main(args) { return {n: (args.n || 0) + 1}; }\n"),
}
# The floor: the interpreter reading a line and writing a result, nothing else.
FLOORS = {
    "python": ("floor.py", 'import os, sys\nfor line in sys.stdin:\n    os.write(3, b\'{"n": 2}\\n\')\n'),
    "node": ("floor.js",
             "const fs = require('fs');\n"
             "const rl = require('readline').createInterface({input: process.stdin, terminal: false});\n"
             "rl.on('line', () => fs.writeSync(3, '{\"n\": 2}\\n'));\n"),
}


def request_line(i):
    # What the agent sends (agent/agent.cc): the params, then the context keys.
    return (json.dumps({"value": {"n": i}, "namespace": "_", "action_name": "bench",
                        "action_version": "1", "activation_id": f"{i:032x}",
                        "transaction_id": f"{i:032x}", "deadline": str(int(time.time() * 1000) + 60000)})
            + "\n").encode()


def cpu_ns(pid):
    total = 0
    task_dir = f"/proc/{pid}/task"
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total


class Runtime:
    """One runtime process with the protocol's pipes, as the agent sets them up: stdin, one
    pipe for stdout and stderr (the logs), fd 3 (the results)."""

    def __init__(self, argv, sentinels):
        self.sentinels = sentinels
        r0, self.stdin = os.pipe()
        self.logs, w1 = os.pipe()
        self.results, w3 = os.pipe()
        actions = [(os.POSIX_SPAWN_DUP2, r0, 0), (os.POSIX_SPAWN_DUP2, w1, 1),
                   (os.POSIX_SPAWN_DUP2, w1, 2), (os.POSIX_SPAWN_DUP2, w3, 3)]
        self.pid = os.posix_spawn(argv[0], argv, {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                                  file_actions=actions)
        for fd in (r0, w1, w3):
            os.close(fd)
        self.pending = {self.results: b"", self.logs: b""}

    def call(self, line):
        os.write(self.stdin, line)
        want = {self.results} | ({self.logs} if self.sentinels else set())
        while want:
            ready, _, _ = select.select(list(want), [], [], 30)
            if not ready:
                raise RuntimeError("no answer in 30 s")
            for fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"the runtime closed fd {fd}: {self.pending[fd][-500:]!r}")
                self.pending[fd] += chunk
                # A result line; the end-of-activation marker of stdout and of stderr.
                done = self.pending[fd].endswith(b"\n") if fd == self.results else \
                    self.pending[fd].count(SENTINEL) >= 2
                if done:
                    want.discard(fd)
        result = self.pending[self.results]
        for fd in self.pending:
            self.pending[fd] = b""
        return result

    def stop(self):
        os.close(self.stdin)
        for fd in (self.logs, self.results):
            os.close(fd)
        os.waitpid(self.pid, 0)


def measure(argv, sentinels, calls):
    """CPU time of the runtime per call (read before and after each call, while the runtime
    waits for its next request: the median is robust to the odd interrupt), and round trips."""
    rt = Runtime(argv, sentinels)
    try:
        for i in range(20):  # warm-up: imports, JIT
            rt.call(request_line(i))
        rtts, cpus = [], []
        for i in range(calls):
            line = request_line(i)
            c = cpu_ns(rt.pid)
            t = time.perf_counter()
            out = rt.call(line)
            rtts.append((time.perf_counter() - t) * 1e6)
            cpus.append((cpu_ns(rt.pid) - c) / 1000)
            if i == 0 and b'"n"' not in out:
                raise RuntimeError(f"unexpected result {out[:200]!r}")
    finally:
        rt.stop()
    rtts.sort()
    cpus.sort()
    return {"cpu_us_p50": cpus[len(cpus) // 2], "cpu_us_mean": sum(cpus) / len(cpus),
            "rtt_p50_us": rtts[len(rtts) // 2], "rtt_p99_us": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]}


def run(ctx):
    trees = [("stoke", os.path.join(ctx.repo_root, "runtimes"))]
    base = os.environ.get("STOKE_BENCH_BASE_RUNTIMES")
    if base:
        trees.append(("base", os.path.abspath(base)))
    interpreters = {"python": PYTHON, "node": NODE}
    shims = {"python": "python/stoke_runtime.py", "node": "node/stoke_runtime.js"}
    calls = ctx.runs * 100
    # Harness and runtime on one CPU: each call is then two context switches,
    # not two cross-CPU wake-ups whose cost depends on what the other CPU is
    # doing (idle exits on this VM made the figures swing 3x between runs).
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    work = tempfile.mkdtemp(prefix="stoke-bench-shims-")
    results = {}
    try:
        print(f"shims: {calls} calls of a trivial function, one at a time, per runtime; kernel "
              f"{os.uname().release}, {os.cpu_count()} cpus, load {ctx.loadavg_start[0]:.2f}")
        print(f"  {'runtime':<8} {'shim':<6} {'cpu us p50':>11} {'cpu us mean':>12} {'own us p50':>11} "
              f"{'rtt p50 us':>11} {'rtt p99 us':>11}")
        for lang, interp in interpreters.items():
            if not os.access(interp, os.X_OK):
                print(f"  {lang}: {interp} missing (skipped)")
                continue
            for name, text in (FUNCTIONS[lang], FLOORS[lang]):
                with open(os.path.join(work, name), "w") as f:
                    f.write(text)
            floor = measure([interp, os.path.join(work, FLOORS[lang][0])], False, calls)
            results[lang] = {"floor": floor}
            print(f"  {lang:<8} {'floor':<6} {floor['cpu_us_p50']:>11.1f} {floor['cpu_us_mean']:>12.1f} {'':>11} "
                  f"{floor['rtt_p50_us']:>11.1f} {floor['rtt_p99_us']:>11.1f}")
            for label, tree in trees:
                res = measure([interp, os.path.join(tree, shims[lang]), os.path.join(work, FUNCTIONS[lang][0])],
                              True, calls)
                res["own_us_p50"] = res["cpu_us_p50"] - floor["cpu_us_p50"]
                results[lang][label] = res
                print(f"  {lang:<8} {label:<6} {res['cpu_us_p50']:>11.1f} {res['cpu_us_mean']:>12.1f} "
                      f"{res['own_us_p50']:>11.1f} {res['rtt_p50_us']:>11.1f} {res['rtt_p99_us']:>11.1f}")
                sys.stdout.flush()
    except (OSError, RuntimeError) as e:
        print(f"bench shims: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.sched_setaffinity(0, affinity)
    os.makedirs(os.path.dirname(os.path.abspath(ctx.json_path)), exist_ok=True)
    with open(ctx.json_path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"(json: {report.rel(ctx.json_path, ctx.repo_root)})")
    return 0
