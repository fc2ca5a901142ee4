#!/usr/bin/python3
"""stoke's Python runtime: runs `def main(args: dict) -> dict` functions, OpenWhisk style.

Speaks the runtime protocol (docs/runtime-protocol.md): one JSON request per line on
stdin, one JSON result per line on fd 3, logs on stdout/stderr closed by OpenWhisk's
end-of-activation sentinel on both streams.

    stoke_runtime.py CODE_PATH [ENTRY]
    stoke_runtime.py --prewarm
    stoke_runtime.py --checkpoint DUMP_FD CODE_PATH [ENTRY]

CODE_PATH is a .py file, or a directory whose __main__.py defines ENTRY (default main).
With --prewarm the runtime starts before there is code (a "stem cell"): the
runtime says {"ready": true} on fd 3 once started; the agent then puts a
function's code into the (until then empty) /code and sends
{"__stoke_init": {"code_path": ..., "entry": ...}} as the first line on stdin; the
runtime acknowledges with {"ok": true} on fd 3 and then serves requests as if it
had been started with that code.

With --checkpoint the runtime loads the code (imports and module-level init),
then saves itself as a checkpoint image to DUMP_FD (docs/checkpoint.md) before
it reads any request, says {"checkpointed": true} on fd 3 and exits. Every
copy restored from that image resumes right there: it refreshes what must
differ between copies, says {"ready": true, "restored": true} on fd 3 and
serves requests like any instance.
"""


import gc
import importlib.util
import json
import os
import random
import sys
import traceback

SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
# Keys of the request that become __OW_* environment variables for the activation.
CONTEXT = {"activation_id": "__OW_ACTIVATION_ID", "action_name": "__OW_ACTION_NAME",
           "action_version": "__OW_ACTION_VERSION", "deadline": "__OW_DEADLINE",
           "namespace": "__OW_NAMESPACE", "transaction_id": "__OW_TRANSACTION_ID"}
# Those that differ on every call go into os.environ only, not into the C
# environment: setenv(3) (what os.environ[k] = v calls) keeps every distinct
# "name=value" string it was given for the life of the process, ~170 bytes a
# call, so a warm instance grew until its memory limit killed it (measured:
# +34 MB over 200,000 calls). A child process gets them with env=os.environ.
PER_CALL = {"activation_id", "deadline", "transaction_id"}


def set_context(environ, request):
    """The request's context as __OW_* variables; putenv only for values that changed."""
    data = getattr(environ, "_data", None)  # CPython's mapping behind os.environ
    for key, env in CONTEXT.items():
        if key in request:
            value = str(request[key])
            if key in PER_CALL and data is not None:
                data[environ.encodekey(env)] = environ.encodevalue(value)
            elif environ.get(env) != value:  # most stay the same call to call; putenv is not free
                environ[env] = value


def load(code_path, entry):
    """Imports the user's code and returns its entry function; raises on any failure."""
    if os.path.isdir(code_path):
        sys.path.insert(0, code_path)
        path = os.path.join(code_path, "__main__.py")
        if not os.path.isfile(path):
            raise ImportError(f"the code has no __main__.py (directory {code_path})")
    else:
        sys.path.insert(0, os.path.dirname(code_path))
        path = code_path
    spec = importlib.util.spec_from_file_location("__stoke_main__", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["__stoke_main__"] = module
    spec.loader.exec_module(module)
    fn = getattr(module, entry, None)
    if not callable(fn):
        raise AttributeError(f"the code defines no function {entry!r}")
    return fn


def developer_error(message):
    # The agent records developer_error (not application_error) for this marker.
    return {"error": message, "__stoke": {"status": "developer_error"}}


SENTINEL_LINE = (SENTINEL + "\n").encode()


def write_all(fd, data):
    """One write() for a line the size of ours; a loop for a large result."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def same_pipe(fd1, fd2):
    try:
        a, b = os.fstat(fd1), os.fstat(fd2)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def end_of_activation(one_pipe):
    # Whatever the function printed goes out before the sentinel. The sentinel
    # goes straight to fds 1 and 2 (what the agent reads), even when the
    # function replaced sys.stdout or sys.stderr. Under stoke both are one
    # pipe: both sentinels then go in one write (one wake-up of the agent).
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 — a broken stream of the function's must not stop the sentinel
            pass
    if one_pipe:
        write_all(1, SENTINEL_LINE * 2)
    else:
        write_all(1, SENTINEL_LINE)
        write_all(2, SENTINEL_LINE)


def load_or_error(code_path, entry):
    """(fn, None) or (None, the traceback of the user's failed import)."""
    try:
        return load(code_path, entry), None
    except BaseException:  # noqa: BLE001 — any failure of the user's import is theirs to see
        return None, traceback.format_exc()


def serve(results, fn, init_error):
    """Answers requests from stdin until it closes (a zygote's instances come here too)."""
    results.flush()  # from here on results go straight to fd 3 (write_all)
    environ = os.environ
    one_pipe = same_pipe(1, 2)
    for line in sys.stdin.buffer:
        request = json.loads(line)
        set_context(environ, request)
        if init_error is not None:
            print(init_error, file=sys.stderr, end="", flush=True)
            result = developer_error("the function's code failed to load: " + init_error.strip().splitlines()[-1])
        else:
            try:
                value = fn(request.get("value", {}))
                if isinstance(value, dict):
                    result = value
                else:
                    result = developer_error(f"main must return a dict, not {type(value).__name__}")
            except BaseException as e:  # noqa: BLE001
                traceback.print_exc()
                sys.stderr.flush()
                result = {"error": f"{type(e).__name__}: {e}"}
        try:
            text = json.dumps(result)
        except (TypeError, ValueError) as e:
            text = json.dumps(developer_error(f"the result is not JSON-serializable: {e}"))
        end_of_activation(one_pipe)
        write_all(3, (text + "\n").encode())


def checkpoint_then_serve(results, dump_fd, code_path, entry):
    fn, init_error = load_or_error(code_path, entry)
    if init_error is not None:
        print(init_error, file=sys.stderr, end="", flush=True)
        results.write(json.dumps({"error": "the function's code failed to load: " +
                                  init_error.strip().splitlines()[-1]}) + "\n")
        results.flush()
        return 1
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import stoke_snapshot  # noqa: E402  (only checkpointing runtimes load it)
    # What init built stays in the image's shared pages: a collection in a
    # restored copy would otherwise write every object's header (COW copies).
    gc.collect()
    gc.freeze()
    try:
        restored = stoke_snapshot.checkpoint(dump_fd)
    except stoke_snapshot.CheckpointError as e:
        results.write(json.dumps({"error": f"cannot checkpoint this function: {e}"}) + "\n")
        results.flush()
        return 1
    if not restored:
        results.write('{"checkpointed": true}\n')
        results.flush()
        return 0
    # A restored copy (fds 0-3 are its own instance's; the dump fd is not open).
    stoke_snapshot.after_restore()
    results.write('{"ready": true, "restored": true}\n')
    results.flush()
    serve(results, fn, None)
    return 0


def main():
    if len(sys.argv) < 2:
        print("usage: stoke_runtime.py CODE_PATH [ENTRY] | --prewarm", file=sys.stderr)
        return 2
    results = os.fdopen(3, "w")
    if sys.argv[1] == "--checkpoint":
        return checkpoint_then_serve(results, int(sys.argv[2]), sys.argv[3],
                                     sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else "main")
    if sys.argv[1] == "--prewarm":
        # Started: from here on a function's code costs only its own import.
        results.write('{"ready": true}\n')
        results.flush()
        # The binary layer, as serve() reads it: a text layer would keep what it read ahead.
        init = json.loads(sys.stdin.buffer.readline())["__stoke_init"]
        code_path, entry = init["code_path"], init.get("entry") or "main"
        results.write('{"ok": true}\n')
        results.flush()
    else:
        code_path, entry = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else "main")
    fn, init_error = load_or_error(code_path, entry)
    serve(results, fn, init_error)
    return 0


if __name__ == "__main__":
    random.seed()  # a process of its own: never share a random state with another instance
    sys.exit(main())
