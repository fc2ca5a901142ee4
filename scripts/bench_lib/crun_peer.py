"""crun as a benchmark peer.

crun 1.8 refuses to run on a hybrid cgroup host ("cgroups in hybrid mode not supported, drop
all controllers from cgroupv2"). It runs once /sys/fs/cgroup/unified is not mounted, so the
crun contenders are driven by a helper process in a *private* mount namespace:

    parent (scripts/bench)                       helper: unshare --mount --propagation private
                                                         /usr/bin/python3 scripts/bench _crun-loop
    --------------------------------------------------------------------------------------------
                                                 check: own mount ns != parent's, no shared
                                                        propagation on /sys/fs/cgroup/unified
                                                 umount /sys/fs/cgroup/unified   (private ns only)
                                                 mount a scratch tmpfs there (see below)
                                                 crun spec -> two bundles (true, python)
      <------------------------------------------ {"ready": true} | {"ready": false, "error": ...}
      {"op": "run", "workload": w, "probe": b} -->
                                                 time posix_spawn(crun run ...) -> waitpid
      <------------------------------------------ {"ok": true, "ns": N} | {"ok": false, "error": e}
      ... (one request per crun sample, so crun stays in the round-robin with the others)
      {"op": "quit"} or EOF ------------------->
                                                 crun delete -f whatever is left, rmdir leftover
                                                 cgroups named after our id prefix
      <------------------------------------------ {"bye": true, "leftovers": [...]}
    parent: looks for leftovers from the host side (cgroups, crun state), removes the work dir.

Nothing is ever mounted or unmounted in the caller's mount namespace.

Why the scratch tmpfs: with unified unmounted, /sys/fs/cgroup/unified is a plain directory of
the host's /sys/fs/cgroup tmpfs, and crun (thinking it is a v1 hierarchy) creates
<id>/cgroup.procs in it as regular files, never removed — a leak into the host's tmpfs hidden
under the unified mount. A tmpfs mounted on top inside the helper's namespace takes those
writes instead and disappears with the namespace; the helper also empties it after every run
(outside the timed window), since a few hundred runs fill a small tmpfs and crun then fails
with ENOSPC writing cgroup.procs. A failed run is followed by `crun delete -f` and an rmdir of
its v1 cgroups (crun leaves them when it fails that way).

Each run uses a fresh container id "<prefix>-<n>" with prefix "stoke-bench-crun-<pid>", so
`find /sys/fs/cgroup -iname '*stoke*'` finds any leftover. crun keeps its state under the work
dir (crun --root), not in /run/crun.
"""

import copy
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile

from . import measure

UNIFIED = "/sys/fs/cgroup/unified"
CGROUP_ROOT = "/sys/fs/cgroup"
PYTHON = "/usr/bin/python3"

# Top-level symlinks of Debian 12's merged /usr, recreated in the container's rootfs.
ROOTFS_SYMLINKS = [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"),
                   ("sbin", "usr/sbin")]
ROOTFS_DIRS = ["usr", "proc", "dev", "tmp"]
# Mounts of `crun spec` that are kept: the rest (/sys, /sys/fs/cgroup, /dev/mqueue) is dropped
# so the container is as lean as the bwrap peer (usr ro, proc, dev, tmp).
KEEP_SPEC_MOUNTS = {"/proc", "/dev", "/dev/pts", "/dev/shm"}


def _mountinfo():
    """[(mount point, fstype, optional fields)] of the calling process's mount namespace."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            out.append((fields[4], right.split()[0], fields[6:]))
    return out


def cgroup_layout():
    """'hybrid', 'unified' or 'legacy', as crun would classify /sys/fs/cgroup."""
    mounts = {mp: (fs, opt) for mp, fs, opt in _mountinfo()}
    root = mounts.get(CGROUP_ROOT, ("", []))[0]
    if root == "cgroup2":
        return "unified"
    if mounts.get(UNIFIED, ("", []))[0] == "cgroup2":
        return "hybrid"
    return "legacy"


def _mnt_ns():
    return os.readlink("/proc/self/ns/mnt")


# --- parent side --------------------------------------------------------------------------

class CrunLoop:
    """The parent's handle on the helper. start() returns None or why crun is skipped."""

    def __init__(self, bench_script, timeout_s):
        self.bench_script = bench_script
        self.timeout_s = timeout_s
        self.prefix = f"stoke-bench-crun-{os.getpid()}"
        self.workdir = None
        self.proc = None
        self.notes = []

    def start(self):
        crun = measure.which("crun")
        if not crun:
            return "crun is not installed"
        unshare = measure.which("unshare")
        if not unshare:
            return "unshare (util-linux) is needed to give crun a private mount namespace"
        self.workdir = tempfile.mkdtemp(prefix="stoke-bench-crun-")
        argv = [unshare, "--mount", "--propagation", "private", PYTHON, self.bench_script,
                "_crun-loop", "--workdir", self.workdir, "--prefix", self.prefix,
                "--timeout", str(self.timeout_s), "--parent-mnt-ns", _mnt_ns()]
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         env=measure.CLEAN_ENV, text=True, bufsize=1)
        except OSError as e:
            self._remove_workdir()
            return f"cannot start the crun helper: {e}"
        reply = self._recv(60)
        if not reply or not reply.get("ready"):
            why = reply.get("error") if reply else "the helper exited during setup"
            self.close()
            return why
        self.notes += reply.get("notes", [])
        return None

    def runner(self, workload, probe=False):
        def run_once():
            reply = self._call({"op": "run", "workload": workload, "probe": probe})
            if not reply.get("ok"):
                raise measure.RunFailed(reply.get("error", "crun helper failed"))
            return reply["ns"]
        return run_once

    def prober(self, workload):
        run = self.runner(workload, probe=True)

        def probe():
            try:
                run()
            except measure.RunFailed as e:
                return str(e)
            return None
        return probe

    def _call(self, msg):
        if self.proc is None or self.proc.poll() is not None:
            raise measure.RunFailed("the crun helper is gone")
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise measure.RunFailed("the crun helper is gone")
        reply = self._recv(self.timeout_s + 30)
        if reply is None:
            raise measure.RunFailed("no answer from the crun helper")
        return reply

    def _recv(self, timeout_s):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not r:
            return None
        line = self.proc.stdout.readline()
        if not line:
            return None
        try:
            return json.loads(line)
        except ValueError:
            return {"ok": False, "ready": False, "error": f"bad reply from helper: {line!r}"}

    def close(self):
        """Stops the helper and checks for leftovers. Returns a list of warnings."""
        warnings = []
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                    self.proc.stdin.flush()
                except BrokenPipeError:
                    pass
                reply = self._recv(60)
                if reply and reply.get("bye"):
                    warnings += [f"crun helper: {l}" for l in reply.get("leftovers", [])]
                try:
                    self.proc.stdin.close()
                except BrokenPipeError:
                    pass
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                    warnings.append("crun helper did not exit; killed")
            self.proc.stdout.close()
            self.proc = None
        warnings += self._host_leftovers()
        self._remove_workdir()
        return warnings

    def _host_leftovers(self):
        found = []
        for dirpath, dirnames, _ in os.walk(CGROUP_ROOT):
            for d in dirnames:
                if d.startswith(self.prefix):
                    found.append(f"leftover cgroup {os.path.join(dirpath, d)}")
        if self.workdir:
            state = os.path.join(self.workdir, "state")
            if os.path.isdir(state) and os.listdir(state):
                found.append(f"leftover crun state: {sorted(os.listdir(state))}")
        return found

    def _remove_workdir(self):
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


# --- helper side (runs inside the private mount namespace) ---------------------------------

class _Helper:
    def __init__(self, workdir, prefix, timeout_s):
        self.workdir = workdir
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.crun = measure.which("crun")
        self.state = os.path.join(workdir, "state")
        self.bundles = {}
        self.seq = 0
        self.notes = []
        self.scratch = False      # a scratch tmpfs hides the unmounted unified hierarchy
        self.spawner = measure.Spawner(timeout_s)

    # setup steps, in order; each returns None or an error sentence
    def check_private_namespace(self, parent_mnt_ns):
        if _mnt_ns() == parent_mnt_ns:
            return "refusing to touch mounts: the helper is not in its own mount namespace"
        for mp, _, opt in _mountinfo():
            if mp in (CGROUP_ROOT, UNIFIED) and any(o.startswith("shared:") for o in opt):
                return f"refusing to touch mounts: {mp} still has shared propagation"
        return None

    def hide_unified(self):
        layout = cgroup_layout()
        if layout != "hybrid":
            self.notes.append(f"cgroup layout is {layout}: nothing to unmount for crun")
            return None
        r = subprocess.run([measure.which("umount") or "umount", UNIFIED], capture_output=True,
                           text=True)
        if r.returncode != 0:
            return f"umount {UNIFIED} in the private namespace failed: {r.stderr.strip()}"
        r = subprocess.run([measure.which("mount") or "mount", "-t", "tmpfs",
                            "-o", "size=16m,mode=755,nosuid,nodev,noexec",
                            "stoke-bench-scratch", UNIFIED], capture_output=True, text=True)
        if r.returncode != 0:
            return f"mounting a scratch tmpfs on {UNIFIED} failed: {r.stderr.strip()}"
        self.scratch = True
        self.notes.append(f"{UNIFIED} unmounted (private mount namespace only), "
                          "scratch tmpfs on top")
        return None

    def build_bundles(self):
        spec_dir = os.path.join(self.workdir, "spec")
        os.makedirs(spec_dir)
        r = subprocess.run([self.crun, "spec", "--bundle", spec_dir], capture_output=True,
                           text=True)
        if r.returncode != 0:
            return f"crun spec failed: {r.stderr.strip()}"
        with open(os.path.join(spec_dir, "config.json")) as f:
            base = json.load(f)

        rootfs = os.path.join(self.workdir, "rootfs")
        os.makedirs(rootfs)
        for d in ROOTFS_DIRS:
            os.makedirs(os.path.join(rootfs, d))
        for name, target in ROOTFS_SYMLINKS:
            os.symlink(target, os.path.join(rootfs, name))

        base["root"] = {"path": rootfs, "readonly": True}
        proc = base["process"]
        proc["terminal"] = False
        proc["env"] = [f"PATH={measure.CLEAN_ENV['PATH']}"]
        mounts = [m for m in base.get("mounts", []) if m["destination"] in KEEP_SPEC_MOUNTS]
        mounts.append({"destination": "/usr", "type": "bind", "source": "/usr",
                       "options": ["rbind", "ro", "nosuid", "nodev"]})
        mounts.append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]})
        base["mounts"] = mounts
        ns = base["linux"].setdefault("namespaces", [])
        # fresh pid, network, ipc, uts, mount (crun spec's default) plus cgroup; no "path":
        # nothing is shared with the host.
        for n in ns:
            n.pop("path", None)
        if not any(n["type"] == "cgroup" for n in ns):
            ns.append({"type": "cgroup"})

        from .sandbox_suite import WORKLOADS
        for workload, argv in WORKLOADS.items():
            cfg = copy.deepcopy(base)
            cfg["process"]["args"] = list(argv)
            bundle = os.path.join(self.workdir, f"bundle-{workload}")
            os.makedirs(bundle)
            with open(os.path.join(bundle, "config.json"), "w") as f:
                json.dump(cfg, f, indent=1)
            self.bundles[workload] = bundle
        os.makedirs(self.state)
        return None

    def argv(self, workload, cid):
        return [self.crun, "--root", self.state, "run", "--bundle", self.bundles[workload], cid]

    def run(self, workload, probe):
        if workload not in self.bundles:
            return {"ok": False, "error": f"unknown workload {workload!r}"}
        self.seq += 1
        cid = f"{self.prefix}-{self.seq}"
        argv = self.argv(workload, cid)
        try:
            if probe:
                err = measure.probe(argv, self.timeout_s)
                if err:
                    raise measure.RunFailed(err)
                return {"ok": True, "ns": 0}
            return {"ok": True, "ns": self.spawner.time_ns(argv)}
        except measure.RunFailed as e:
            self.delete(cid)
            self.remove_cgroups(cid)
            return {"ok": False, "error": str(e)}
        finally:
            self.clear_scratch(cid)

    def delete(self, cid):
        subprocess.run([self.crun, "--root", self.state, "delete", "-f", cid],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def clear_scratch(self, cid):
        """crun's pseudo-cgroup of this run on the scratch tmpfs (outside the timed window)."""
        if self.scratch:
            shutil.rmtree(os.path.join(UNIFIED, cid), ignore_errors=True)

    def remove_cgroups(self, name):
        """rmdir the (v1) cgroups called name or name-*; returns [(path, None | error)]."""
        out = []
        for ctrl in sorted(os.listdir(CGROUP_ROOT)):
            base = os.path.join(CGROUP_ROOT, ctrl)
            if base == UNIFIED or not os.path.isdir(base):
                continue
            for dirpath, dirnames, _ in os.walk(base, topdown=False):
                for d in dirnames:
                    if d == name or d.startswith(name + "-"):
                        p = os.path.join(dirpath, d)
                        try:
                            os.rmdir(p)
                            out.append((p, None))
                        except OSError as e:
                            out.append((p, e.strerror))
        return out

    def cleanup(self):
        """Deletes leftover containers and cgroups; returns what had been left behind."""
        left = []
        if self.crun and os.path.isdir(self.state):
            r = subprocess.run([self.crun, "--root", self.state, "list", "-q"],
                               capture_output=True, text=True)
            for cid in r.stdout.split():
                left.append(f"container {cid} was still there (deleted)")
                self.delete(cid)
        for p, err in self.remove_cgroups(self.prefix):
            left.append(f"cgroup {p} was still there (removed)" if err is None else
                        f"cgroup {p} is still there: {err}")
        return left


def helper_main(argv):
    """Entry point of `scripts/bench _crun-loop` (inside `unshare --mount`)."""
    import argparse
    ap = argparse.ArgumentParser(prog="bench _crun-loop")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--timeout", type=float, required=True)
    ap.add_argument("--parent-mnt-ns", required=True)
    a = ap.parse_args(argv)

    out = sys.stdout

    def send(msg):
        out.write(json.dumps(msg) + "\n")
        out.flush()

    h = _Helper(a.workdir, a.prefix, a.timeout)
    steps = [lambda: h.check_private_namespace(a.parent_mnt_ns), h.hide_unified,
             h.build_bundles]
    for step in steps:
        try:
            err = step()
        except OSError as e:
            err = f"setting up the crun bundle: {e}"
        if err:
            send({"ready": False, "error": err})
            return 1
    send({"ready": True, "notes": h.notes})

    try:
        for line in sys.stdin:
            try:
                msg = json.loads(line)
            except ValueError:
                send({"ok": False, "error": f"bad request {line!r}"})
                continue
            if msg.get("op") == "run":
                send(h.run(msg.get("workload"), bool(msg.get("probe"))))
            elif msg.get("op") == "quit":
                break
            else:
                send({"ok": False, "error": f"unknown op {msg.get('op')!r}"})
    finally:
        left = h.cleanup()
        try:
            send({"bye": True, "leftovers": left})
        except BrokenPipeError:
            pass
    return 0
