"""A Python process that checkpoints itself, then serves commands (restore_test.cc).

    python3 restore_driver.py DUMP_FD

Imports a few heavy modules and sets some state, then calls
stoke_snapshot.checkpoint(DUMP_FD). The original prints {"checkpointed": true}
and exits. A restored copy prints {"restored": true, ...} at once, then answers
one JSON command per line on stdin with one JSON line on stdout.
"""

import ctypes
import decimal
import email
import http.client
import json
import os
import random
import re
import sys
import time

import stoke_snapshot

GREETING = "made before the checkpoint"
counter = 41
# Some heap that must survive: a dict with many entries and a compiled regex.
table = {f"key{i}": i * i for i in range(20000)}
pattern = re.compile(r"(\d+)-(\w+)")


def install_time_trap():
    """A seccomp filter that kills the process on any time system call."""
    # struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}
    ld_nr = (0x20, 0, 0, 0)              # BPF_LD|BPF_W|BPF_ABS, seccomp_data.nr
    kill = (0x06, 0, 0, 0x80000000)      # BPF_RET SECCOMP_RET_KILL_PROCESS
    allow = (0x06, 0, 0, 0x7FFF0000)     # BPF_RET SECCOMP_RET_ALLOW
    trapped = [228, 96, 201]             # clock_gettime, gettimeofday, time
    prog = [ld_nr]
    for i, nr in enumerate(trapped):
        # jeq nr -> jump to the kill at the end, else fall through
        prog.append((0x15, len(trapped) - i, 0, nr))
    prog += [allow, kill]

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    filters = (Filter * len(prog))(*[Filter(*f) for f in prog])
    fprog = Prog(len(prog), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    # prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog); no_new_privs is set by the sandbox.
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def handle(cmd):
    global counter
    op = cmd["op"]
    if op == "state":
        return {"counter": counter, "greeting": GREETING, "table": sum(table.values()),
                "match": pattern.match("42-answer").groups(),
                "decimal": str(decimal.Decimal(1) / decimal.Decimal(8)),
                "email": email.message_from_string("Subject: hi\n\nbody")["Subject"],
                "http": http.client.responses[418], "pid": os.getpid(),
                "modules": [m for m in ("json", "re", "decimal", "email", "http.client") if m in sys.modules]}
    if op == "incr":
        counter += 1
        return {"counter": counter}
    if op == "time_without_syscalls":
        install_time_trap()
        return {"time": time.time(), "monotonic": time.monotonic()}
    if op == "alloc":
        mb = cmd["mb"]
        # Many small blocks (glibc's brk heap and obmalloc arenas), then one big one (mmap).
        blocks = [bytes([i % 251]) * 1000 for i in range(mb * 512)]
        big = bytearray(mb << 19)
        for i in range(0, len(big), 4096):
            big[i] = 1
        return {"blocks": len(blocks), "big": len(big), "sum": sum(b[0] for b in blocks[:1000])}
    if op == "thread":
        import threading
        out = {}
        t = threading.Thread(target=lambda: out.update(value=sum(range(100000)), tid=threading.get_native_id()))
        t.start()
        t.join()
        return out
    if op == "subprocess":
        import subprocess
        r = subprocess.run(["/bin/echo", "from a child"], capture_output=True, text=True, check=True)
        return {"out": r.stdout.strip()}
    if op == "import_new":
        before = "csv" in sys.modules
        import csv
        return {"before": before, "dialects": sorted(csv.list_dialects())}
    if op == "dlopen_new":
        before = any("libuuid.so" in line for line in open("/proc/self/maps"))
        lib = ctypes.CDLL("libuuid.so.1")
        out = ctypes.create_string_buffer(16)
        lib.uuid_generate_random(out)
        return {"before": before, "uuid": out.raw.hex()}
    if op == "random":
        return {"random": random.getrandbits(64)}
    if op == "probe":
        import subprocess
        r = subprocess.run(["/probe", "isolation"], capture_output=True, text=True)
        return {"rc": r.returncode, "report": json.loads(r.stdout.strip().splitlines()[-1]), "err": r.stderr}
    if op == "sleep":
        time.sleep(cmd["s"])
        return {"slept": cmd["s"]}
    if op == "exit":
        sys.stdout.flush()
        os._exit(cmd.get("code", 0))
    return {"error": "unknown op " + op}


def main():
    dump_fd = int(sys.argv[1])
    if not stoke_snapshot.checkpoint(dump_fd):
        print(json.dumps({"checkpointed": True, "counter": counter}), flush=True)
        return 0
    stoke_snapshot.after_restore()
    started, handed_over = stoke_snapshot.restore_times()
    print(json.dumps({"restored": True, "counter": counter, "restorer_started": started,
                      "restorer_handed_over": handed_over, "python_replied": time.monotonic()}), flush=True)
    for line in sys.stdin:
        try:
            reply = handle(json.loads(line))
        except Exception as e:  # noqa: BLE001 — the test wants to see it
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
