#!/usr/bin/python3
"""stoke's Python function zygote (docs/zygotes.md): an initialized interpreter that forks instances.

    stoke-zygote-maker TMP_BYTES -- /usr/bin/python3 stoke_zygote.py [MODULE...]

Started by its maker (runtimes/zygote/maker.c, pid 1 of the zygote's sandbox),
which dropped every capability, set no_new_privs and stacked the zygote's
seccomp filter before exec: this process, and so the tenant's import-time
code, has no privilege a call-time instance lacks (review finding #8). It
serves the agent on fd 3, a SOCK_SEQPACKET socket (one JSON message per
datagram, fds as SCM_RIGHTS); fd 4 is its socket to the maker.

  zygote → agent   {"started": true} + [its own pidfd]   (before any tenant code)
  agent → zygote   {"op": "function", "code_path", "entry", "env", "instance_seccomp"}
      imports the function's code (the MODULEs were imported at start), runs its
      module-level init and says {"ready": true} (or {"error": ...}).
  agent → zygote   {"op": "fork"} + fds [stdin, log, results, cgroup...]
                   → {"ok": true} + [pidfd]  |  {"error": ...}
      forks an *instance* into namespaces the maker made (libstoke_zygote.so):
      its own cgroup, no capabilities, the default seccomp filter, fds 0..3
      only; it then serves activations exactly like a cold runtime
      (stoke_runtime.serve).

A zygote only reaps the children it forked (user code may wait for its own).
"""

import ctypes
import gc
import json
import os
import signal
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stoke_runtime  # noqa: E402  (the shim's code is shared with every instance)

LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zygote", "libstoke_zygote.so")
MAX_MESSAGE = 1 << 16
MAX_FDS = 16


class Fork(ctypes.Structure):
    """struct stoke_fork of zygote_fork.c, field by field."""
    _fields_ = [("fds", ctypes.c_int32 * 4), ("cgroup_fds", ctypes.c_int32 * 8), ("cgroup_fd_count", ctypes.c_int32),
                ("seccomp", ctypes.c_char_p), ("seccomp_len", ctypes.c_uint32), ("pidfd", ctypes.c_int32),
                ("pid", ctypes.c_int32), ("error", ctypes.c_char * 256)]


lib = ctypes.PyDLL(LIB, use_errno=True)  # PyDLL: called holding the GIL, as PyOS_*Fork* require
lib.stoke_zygote_fork.argtypes = [ctypes.POINTER(Fork)]
lib.stoke_zygote_fork.restype = ctypes.c_int


class Zygote:
    def __init__(self, control_fd):
        self.control = socket.socket(fileno=control_fd)
        self.children = set()
        signal.signal(signal.SIGCHLD, lambda *_: self.reap())

    def reap(self):
        for pid in list(self.children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.children.discard(pid)

    def send(self, message, fds=()):
        data = json.dumps(message).encode()
        if fds:
            socket.send_fds(self.control, [data], list(fds))
        else:
            self.control.send(data)

    def fork(self, child_fds, cgroup_fds, seccomp):
        """Returns (0, -1) in the instance (set up), (pid, pidfd) in the zygote; raises on failure."""
        f = Fork()
        for i in range(4):
            f.fds[i] = child_fds[i]
        if len(cgroup_fds) > 8:
            raise ValueError(f"at most 8 cgroup fds, got {len(cgroup_fds)}")
        f.cgroup_fd_count = len(cgroup_fds)
        for i, fd in enumerate(cgroup_fds):
            f.cgroup_fds[i] = fd
        f.seccomp = seccomp
        f.seccomp_len = len(seccomp) // 8
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # nothing buffered may be written twice
        pid = lib.stoke_zygote_fork(ctypes.byref(f))
        if pid < 0:
            raise OSError(f.error.decode(errors="replace"))
        if pid > 0:
            self.children.add(pid)
        return pid, f.pidfd

    def serve(self, on_request):
        """Receives requests until the agent closes the socket; returns in forked children."""
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.control, MAX_MESSAGE, MAX_FDS)
            except InterruptedError:
                continue
            if not data:
                return None  # the agent is gone
            try:
                request = json.loads(data)
                child, pidfd = on_request(request, fds)
                if child is not None:
                    return child
                try:
                    self.send({"ok": True}, [pidfd])
                finally:
                    os.close(pidfd)
            except Exception as e:  # noqa: BLE001 — a bad request must not end the zygote
                self.send({"error": f"{type(e).__name__}: {e}"})
            finally:
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass

    def become_child(self):
        # libstoke_zygote closed every fd but 0..3: forget the socket object
        # without closing a number that now means something else.
        self.control.detach()
        self.children.clear()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def share_heap_with_forks():
    """Keeps the garbage collector's hands off what the zygote built: a collection
    in an instance would otherwise write every tracked object's header and so
    copy (COW) most of the zygote's heap into each instance."""
    gc.collect()
    gc.freeze()


def thread_count():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def main():
    for name in sys.argv[1:]:
        __import__(name)  # preloaded before any tenant code
    zygote = Zygote(3)
    # Before any tenant code: a pidfd of this process, which the agent checks
    # (a child of the maker, in its cgroup) and uses to tell it from its maker.
    own = os.pidfd_open(os.getpid())
    zygote.send({"started": True}, [own])
    os.close(own)
    request = json.loads(zygote.control.recv(MAX_MESSAGE) or b"{}")
    if request.get("op") != "function" or not isinstance(request.get("env"), dict):
        zygote.send({"error": "expected the function first"})
        return 1
    os.environ.update({str(k): str(v) for k, v in request["env"].items()})
    instance_filter = bytes.fromhex(request["instance_seccomp"])
    fn, init_error = stoke_runtime.load_or_error(request["code_path"], request.get("entry") or "main")
    if init_error is not None:
        zygote.send({"error": "the function's code failed to load: " + init_error.strip().splitlines()[-1],
                     "traceback": init_error})
        return 1
    threads = thread_count()
    if threads != 1:
        # Forking a multithreaded process copies only the forking thread:
        # locks held by the others stay held forever in every instance.
        zygote.send({"error": f"the function's code leaves {threads} threads running after import; "
                              "a zygote must be single-threaded"})
        return 1
    share_heap_with_forks()
    zygote.send({"ready": True})

    def on_fork(fork_request, fds):
        if fork_request.get("op") != "fork":
            raise ValueError(f"unknown request {fork_request.get('op')!r}")
        if len(fds) < 3:
            raise ValueError(f"a fork takes stdin, log and results fds (+ cgroup), got {len(fds)} fds")
        stdin, log, results = fds[:3]
        pid, pidfd = zygote.fork([stdin, log, log, results], fds[3:], instance_filter)
        return ("instance" if pid == 0 else None), pidfd

    if zygote.serve(on_fork) != "instance":
        return 0
    zygote.become_child()
    # random was reseeded by its own after-fork hook (PyOS_AfterFork_Child).
    results = os.fdopen(3, "w")
    stoke_runtime.serve(results, fn, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
