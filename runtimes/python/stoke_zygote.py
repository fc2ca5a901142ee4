#!/usr/bin/python3
"""stoke's Python zygotes (docs/zygotes.md): initialized interpreters that fork instances.

    stoke_zygote.py [MODULE...]

Runs as pid 1 of a zygote sandbox (the agent's "runtime zygote"): imports the
runtime shim and MODULEs, then serves the agent on fd 3, a SOCK_SEQPACKET
socket (one JSON message per datagram, fds as SCM_RIGHTS):

  runtime zygote → agent   {"ready": true}
  agent → runtime zygote   {"op": "function", ...} + fds [control, log, cgroup...]
                           → {"ok": true} + [pidfd]  |  {"error": ...}
  agent → function zygote  {"op": "env", "env": {...}}  (its own socket; never via the runtime zygote)
      forks a *function zygote* into its own user, mount, pid, ipc, uts and
      network namespaces (libstoke_zygote.so does that before any Python runs
      there); it imports the function's code, runs its module-level init and
      says {"ready": true} (or {"error": ...}) on its own control socket.
  agent → function zygote  {"op": "fork", ...} + fds [stdin, log, results, cgroup...]
                           → {"ok": true} + [pidfd]  |  {"error": ...}
      forks an *instance*: fresh namespaces, its own cgroup, no capabilities,
      seccomp, fds 0..3 only; it then serves activations exactly like a cold
      runtime (stoke_runtime.serve).

The runtime zygote never runs user code. A zygote only reaps the children it
forked (user code in a function zygote may wait for its own).
"""

import ctypes
import gc
import json
import os
import select
import signal
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stoke_runtime  # noqa: E402  (the shim's code is shared with every instance)

LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zygote", "libstoke_zygote.so")
FUNCTION, INSTANCE = 1, 2
MAX_MESSAGE = 1 << 16
MAX_FDS = 16


class Fork(ctypes.Structure):
    """struct stoke_fork of zygote_fork.c, field by field."""
    _fields_ = [("kind", ctypes.c_int32), ("fds", ctypes.c_int32 * 4), ("cgroup_fds", ctypes.c_int32 * 8),
                ("cgroup_fd_count", ctypes.c_int32), ("map_id", ctypes.c_int32), ("hostname", ctypes.c_char_p),
                ("code_source", ctypes.c_char_p), ("tmp_bytes", ctypes.c_uint64), ("seccomp", ctypes.c_char_p),
                ("seccomp_len", ctypes.c_uint32), ("pidfd", ctypes.c_int32), ("pid", ctypes.c_int32),
                ("error", ctypes.c_char * 256)]


lib = ctypes.PyDLL(LIB, use_errno=True)  # PyDLL: called holding the GIL, as PyOS_*Fork* require
lib.stoke_zygote_fork.argtypes = [ctypes.POINTER(Fork)]
lib.stoke_zygote_fork.restype = ctypes.c_int
lib.stoke_zygote_prepare_netns.argtypes = [ctypes.c_int]
lib.stoke_zygote_prepare_netns.restype = ctypes.c_int
NETNS_AHEAD = 2  # network namespaces a function zygote keeps ready
IDLE_BEFORE_PREPARE = 0  # poll: a waiting request goes first


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

    def fork(self, kind, request, child_fds, cgroup_fds, seccomp, map_id=-1, code_source=None):
        """Returns (0, -1) in the child (set up), (pid, pidfd) in the parent; raises on failure."""
        f = Fork()
        f.kind = kind
        for i in range(4):
            f.fds[i] = child_fds[i]
        if len(cgroup_fds) > 8:
            raise ValueError(f"at most 8 cgroup fds, got {len(cgroup_fds)}")
        f.cgroup_fd_count = len(cgroup_fds)
        for i, fd in enumerate(cgroup_fds):
            f.cgroup_fds[i] = fd
        f.map_id = map_id
        f.hostname = str(request.get("hostname", "stoke")).encode()
        f.code_source = code_source.encode() if code_source else None
        f.tmp_bytes = int(request.get("tmp_bytes", 64 << 20))
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

    def serve(self, on_request, between=None):
        """Receives requests until the agent closes the socket; returns in forked children.

        `between` runs after an answer unless the next request is already waiting (it
        makes network namespaces ahead: measured, that costs the fork it answered less
        than making one inside the next fork's clone)."""
        pending = between is not None
        while True:
            if pending and not select.select([self.control], [], [], IDLE_BEFORE_PREPARE)[0]:
                between()
                pending = False
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
                pending = between is not None
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


def run_function_zygote(request):
    """In a new function zygote (set up by the C half): load the code, then fork instances."""
    zygote = Zygote(3)
    # The agent sends the function's env here, on this zygote's own socket,
    # never through the runtime zygote (whose memory every function zygote
    # starts from).
    env_message = json.loads(zygote.control.recv(MAX_MESSAGE) or b"{}")
    if env_message.get("op") != "env" or not isinstance(env_message.get("env"), dict):
        zygote.send({"error": "expected the function's env first"})
        return 1
    os.environ.update({str(k): str(v) for k, v in env_message["env"].items()})
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
    instance_filter = bytes.fromhex(request["instance_seccomp"])
    share_heap_with_forks()
    zygote.send({"ready": True})

    def on_fork(fork_request, fds):
        if fork_request.get("op") != "fork":
            raise ValueError(f"unknown request {fork_request.get('op')!r}")
        if len(fds) < 3:
            raise ValueError(f"a fork takes stdin, log and results fds (+ cgroup), got {len(fds)} fds")
        stdin, log, results = fds[:3]
        pid, pidfd = zygote.fork(INSTANCE, fork_request, [stdin, log, log, results], fds[3:], instance_filter)
        return ("instance" if pid == 0 else None), pidfd

    def prepare():
        if lib.stoke_zygote_prepare_netns(NETNS_AHEAD) < 0:
            err = ctypes.get_errno()
            print(f"stoke zygote: no network namespaces made ahead ({os.strerror(err)}); forks make their own",
                  file=sys.stderr, flush=True)

    if zygote.serve(on_fork, between=prepare) != "instance":
        return 0
    zygote.become_child()
    # random was reseeded by its own after-fork hook (PyOS_AfterFork_Child).
    results = os.fdopen(3, "w")
    stoke_runtime.serve(results, fn, None)
    return 0


def main():
    for name in sys.argv[1:]:
        __import__(name)  # preloaded: every function zygote shares these pages
    zygote = Zygote(3)
    share_heap_with_forks()
    zygote.send({"ready": True})

    def on_function(request, fds):
        if request.get("op") != "function":
            raise ValueError(f"unknown request {request.get('op')!r}")
        if len(fds) < 2:
            raise ValueError(f"a function zygote takes control and log fds (+ cgroup), got {len(fds)} fds")
        control, log = fds[:2]
        seccomp = bytes.fromhex(request["zygote_seccomp"])
        map_id = int(request["id_index"])
        if not 0 < map_id < 65536:
            raise ValueError(f"id_index {map_id} is out of range")
        pid, pidfd = zygote.fork(FUNCTION, request, [-1, log, log, control], fds[2:], seccomp, map_id=map_id,
                                 code_source=request["code_source"])
        return (request if pid == 0 else None), pidfd

    request = zygote.serve(on_function)
    if request is None:
        return 0
    zygote.become_child()
    return run_function_zygote(request)


if __name__ == "__main__":
    sys.exit(main())
