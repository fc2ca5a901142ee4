"""Timing commands and summarizing samples.

One sample is the wall time from os.posix_spawn() to os.waitpid() of the whole command,
measured with CLOCK_MONOTONIC (time.perf_counter_ns). stdin/stdout/stderr of the measured
command are /dev/null, its environment is CLEAN_ENV, and it runs in its own process group so
a hung run can be killed as a whole.
"""

import gc
import math
import os
import signal
import subprocess
import sys
import tempfile
import time

# The same small environment for every contender: nothing from the caller's shell (the pyenv
# python3 first on PATH, PYTHON* variables...) leaks into a measured command.
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


class RunFailed(Exception):
    """A measured command did not exit 0 (or did not exit in time)."""


class _Alarm(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Alarm()


def which(name):
    """Looks a program up on CLEAN_ENV's PATH (never on the caller's PATH)."""
    for d in CLEAN_ENV["PATH"].split(":"):
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


class Spawner:
    """Times argv runs: posix_spawn -> waitpid, output to /dev/null, with a per-run timeout."""

    def __init__(self, timeout_s):
        self.timeout_s = timeout_s
        self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        # stderr goes to an unlinked temp file (written only when something fails), so a run
        # that fails in the middle of the rounds can still say why; same cost as /dev/null.
        fd, path = tempfile.mkstemp(prefix="stoke-bench-stderr-")
        os.unlink(path)
        self._errlog = fd
        os.set_inheritable(fd, False)
        self._file_actions = [(os.POSIX_SPAWN_DUP2, self._devnull, 0),
                              (os.POSIX_SPAWN_DUP2, self._devnull, 1),
                              (os.POSIX_SPAWN_DUP2, self._errlog, 2)]
        signal.signal(signal.SIGALRM, _on_alarm)

    def time_ns(self, argv, env=CLEAN_ENV):
        """Runs argv once; returns elapsed ns. Raises RunFailed on non-zero exit or timeout."""
        pid = None
        err_pos = os.lseek(self._errlog, 0, os.SEEK_END)
        signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
        try:
            t0 = time.perf_counter_ns()
            pid = os.posix_spawn(argv[0], argv, env, file_actions=self._file_actions, setpgroup=0)
            _, status = os.waitpid(pid, 0)
            t1 = time.perf_counter_ns()
        except OSError as e:   # posix_spawn itself (e.g. the binary is being rebuilt)
            raise RunFailed(f"cannot start {argv[0]}: {e.strerror}")
        except _Alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if pid is not None:
                _kill_and_reap(pid)
            raise RunFailed(f"no exit after {self.timeout_s:g} s (killed)"
                            + self._stderr_since(err_pos))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        rc = os.waitstatus_to_exitcode(status)
        if rc != 0:
            raise RunFailed(_describe_rc(rc) + self._stderr_since(err_pos))
        return t1 - t0

    def _stderr_since(self, pos):
        end = os.lseek(self._errlog, 0, os.SEEK_END)
        data = os.pread(self._errlog, min(end - pos, 65536), max(pos, end - 65536))
        return _stderr_tail(data)

    def close(self):
        os.close(self._devnull)
        os.close(self._errlog)


def _kill_and_reap(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _describe_rc(rc):
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def probe(argv, timeout_s, env=CLEAN_ENV):
    """Runs argv once with stderr captured. Returns None if it exits 0, else why not."""
    try:
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        return f"cannot start {argv[0]}: {e.strerror}"
    try:
        _, err = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)   # the whole session, not only argv[0]
        except ProcessLookupError:
            pass
        p.communicate()
        return f"no exit after {timeout_s:g} s (killed)"
    if p.returncode == 0:
        return None
    return _describe_rc(p.returncode) + _stderr_tail(err)


def _stderr_tail(err):
    lines = [l.strip() for l in err.decode(errors="replace").splitlines() if l.strip()]
    return (": " + " | ".join(lines[-2:])) if lines else ""


# --- the round-robin runner -------------------------------------------------------------

class Contender:
    """One measured command. run_once() returns ns or raises RunFailed; probe() returns None
    or why the command does not work. skipped/failed hold the reason it has no result."""

    def __init__(self, runner, workload, describe, run_once=None, probe=None, skipped=None):
        self.runner = runner          # "stoke", "host", "unshare", "bwrap", "crun"
        self.workload = workload      # "true", "python"
        self.describe = describe      # the command line, for the table and docs
        self.run_once = run_once
        self.probe = probe
        self.skipped = skipped
        self.failed = None
        self.samples_ns = []

    @property
    def name(self):
        return f"{self.runner} {self.workload}"

    @property
    def ok(self):
        return not self.skipped and not self.failed


def run_round_robin(contenders, runs, warmup, progress=True):
    """Runs every usable contender warmup + runs times, one of each per round.

    The starting contender rotates each round, so none always follows the same neighbour
    (e.g. the one whose namespace teardown is still running in the kernel). Warm-up rounds
    are discarded. A contender that fails a run is dropped with the reason in .failed.
    """
    active = [c for c in contenders if c.ok]
    total = warmup + runs
    show = progress and sys.stderr.isatty()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for rnd in range(total):
            if not active:
                break
            k = rnd % len(active)
            for c in active[k:] + active[:k]:
                try:
                    ns = c.run_once()
                except RunFailed as e:
                    c.failed = f"run {rnd + 1} ({'warm-up' if rnd < warmup else 'measured'}): {e}"
                    active.remove(c)
                    continue
                if rnd >= warmup:
                    c.samples_ns.append(ns)
            if show and (rnd % 5 == 4 or rnd == total - 1):
                sys.stderr.write(f"\r  round {rnd + 1}/{total}")
                sys.stderr.flush()
    finally:
        if gc_was_enabled:
            gc.enable()
        if show:
            sys.stderr.write("\r" + " " * 30 + "\r")


# --- statistics --------------------------------------------------------------------------

def percentile(sorted_xs, q):
    """q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not sorted_xs:
        return math.nan
    k = (len(sorted_xs) - 1) * q / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (k - lo)


def summarize(samples_ns):
    xs = sorted(s / 1e6 for s in samples_ns)
    return {
        "n": len(xs),
        "p50_ms": percentile(xs, 50),
        "p99_ms": percentile(xs, 99),
        "mean_ms": sum(xs) / len(xs) if xs else math.nan,
        "min_ms": xs[0] if xs else math.nan,
        "max_ms": xs[-1] if xs else math.nan,
    }
