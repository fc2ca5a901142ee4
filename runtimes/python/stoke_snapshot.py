"""Checkpoint/restore for the Python runtime (docs/checkpoint.md).

    import stoke_snapshot
    if stoke_snapshot.checkpoint(dump_fd):
        stoke_snapshot.after_restore()   # this process is a restored copy
    else:
        ...                              # the original: the dump is written

checkpoint(dump_fd) makes the process dump itself (libstoke_checkpoint.so) to
dump_fd, a regular file open for writing. It returns False in the original
process once the dump is written, and True when the process is a restored copy
resuming from that dump. It raises CheckpointError when the process cannot be
checkpointed (more than one thread, an fd other than 0-3 and dump_fd open, shared
memory, ...); nothing is changed then.

Call it at the ready point: after imports and init, before reading any request
(anything buffered in sys.stdin would be replayed in every restored copy). In a
restored copy, dump_fd is not open; fds 0-3 are the new instance's.

after_restore() must run first thing in a restored copy: every copy starts with
the same memory, so per-process secrets are refreshed here (docs/security.md
lists what stays shared).
"""

import ctypes
import os
import sys

LIB_PATH = os.environ.get("STOKE_CHECKPOINT_LIB", "/runtime/checkpoint/libstoke_checkpoint.so")

_lib = None


class CheckpointError(RuntimeError):
    """The process cannot be checkpointed, or writing the dump failed."""


def _library():
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(LIB_PATH)
        lib.stoke_checkpoint.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
        lib.stoke_checkpoint.restype = ctypes.c_int
        _lib = lib
    return _lib


def checkpoint(dump_fd):
    """Dumps this process to dump_fd. False: original (dump written); True: restored copy."""
    lib = _library()
    # Output still buffered now would be written again by every restored copy.
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    # OpenSSL's generator is set up on first use (~1 ms of provider loading);
    # done here, that cost lands in the image, and after_restore() only has to
    # reseed it.
    ssl = sys.modules.get("ssl")
    if ssl is not None:
        ssl.RAND_bytes(1)
    error = ctypes.create_string_buffer(640)
    rc = lib.stoke_checkpoint(int(dump_fd), error, len(error))
    if rc < 0:
        raise CheckpointError(error.value.decode("utf-8", "replace") or "checkpoint failed")
    return rc == 1


def restore_times():
    """In a restored copy: (restorer started, restorer handed over), CLOCK_MONOTONIC seconds."""
    lib = _library()
    start, end = ctypes.c_uint64(), ctypes.c_uint64()
    if lib.stoke_restore_times(ctypes.byref(start), ctypes.byref(end)) != 0:
        return None
    return start.value / 1e9, end.value / 1e9


def after_restore():
    """Refreshes per-process state in a restored copy (every copy starts identical)."""
    import random
    random.seed(os.urandom(32))
    # tempfile keeps its own generator, re-created only when the pid changes;
    # a restored copy usually has the pid of the original.
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:
        tempfile._name_sequence = None
    # OpenSSL's generator state was cloned too: mix in fresh entropy.
    ssl = sys.modules.get("ssl")
    if ssl is not None:
        ssl.RAND_add(os.urandom(32), 32.0)
    # multiprocessing's authentication key is made once per process.
    mp_process = sys.modules.get("multiprocessing.process")
    if mp_process is not None:
        try:
            mp_process.current_process().authkey = os.urandom(32)
        except Exception:  # noqa: BLE001 — best effort; only matters if it is used
            pass
