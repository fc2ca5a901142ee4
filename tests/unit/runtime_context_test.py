#!/usr/bin/python3
"""The runtime shims' per-call context (__OW_* variables), as plain processes driven over
their protocol (docs/runtime-protocol.md): the function sees its own call's values, a child
process it starts sees them too (Node: by default; Python: with env=os.environ), and tens of
thousands of calls with distinct ids do not grow the process (setenv(3) keeps every distinct
string it was given: +34 MB per 200,000 Python calls before).

Run: /usr/bin/python3 -m unittest -v runtime_context_test   (from tests/unit)
"""

import json
import os
import shutil
import sys
import tempfile
import unittest

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "scripts"))

from bench_lib.shims_suite import Runtime as ProtocolRuntime  # noqa: E402
CALLS = 20000

PYTHON_FN = """import os, subprocess
def main(args):
    out = {"id": os.environ.get("__OW_ACTIVATION_ID"), "deadline": os.environ.get("__OW_DEADLINE"),
           "name": os.environ.get("__OW_ACTION_NAME")}
    if args.get("child"):
        out["child"] = subprocess.run(["/bin/sh", "-c", "echo $__OW_ACTIVATION_ID"], env=os.environ,
                                      capture_output=True, text=True).stdout.strip()
    return out
"""
NODE_FN = """const cp = require('child_process');
function main(args) {
  const out = {id: process.env.__OW_ACTIVATION_ID, deadline: process.env.__OW_DEADLINE,
               name: process.env.__OW_ACTION_NAME};
  if (args.child) out.child = cp.execSync('echo $__OW_ACTIVATION_ID').toString().trim();
  return out;
}
"""


def request(i, child=False):
    return (json.dumps({"value": {"child": child}, "namespace": "_", "action_name": "ctx",
                        "action_version": "1", "activation_id": f"{i:032x}", "transaction_id": f"{i:032x}",
                        "deadline": str(1765000000000 + i)}) + "\n").encode()


class Runtime(ProtocolRuntime):
    """A shim as a plain process with the protocol's pipes (the shims benchmark's driver);
    each call's result parsed."""

    def __init__(self, argv):
        super().__init__(argv, sentinels=True)

    def call(self, line):
        return json.loads(super().call(line))

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


class Context:
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="stoke-context-")
        path = os.path.join(self.dir, self.FILE)
        with open(path, "w") as f:
            f.write(self.SOURCE)
        self.rt = Runtime(self.argv(path))

    def tearDown(self):
        self.rt.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_each_call_sees_its_own_values_and_a_child_sees_them(self):
        for i in (1, 2, 3):
            out = self.rt.call(request(i, child=(i == 3)))
            self.assertEqual(out["id"], f"{i:032x}")
            self.assertEqual(out["deadline"], str(1765000000000 + i))
            self.assertEqual(out["name"], "ctx")
        self.assertEqual(out["child"], f"{3:032x}")

    def test_many_calls_with_distinct_ids_do_not_grow_the_process(self):
        for i in range(2000):  # warm-up: allocator and interpreter caches settle
            self.rt.call(request(i))
        before = self.rt.rss_kib()
        for i in range(2000, 2000 + CALLS):
            self.rt.call(request(i))
        grown = self.rt.rss_kib() - before
        # The leak was ~170 (Python) and ~250 (Node) bytes a call: 3.4-5 MB here.
        self.assertLess(grown, 1536, f"RSS grew {grown} KiB over {CALLS} calls")


class PythonContext(Context, unittest.TestCase):
    FILE, SOURCE = "main.py", PYTHON_FN

    def argv(self, path):
        return ["/usr/bin/python3", os.path.join(REPO, "runtimes", "python", "stoke_runtime.py"), path]


@unittest.skipUnless(os.path.exists("/usr/bin/node"), "no /usr/bin/node")
class NodeContext(Context, unittest.TestCase):
    FILE, SOURCE = "main.js", NODE_FN

    def argv(self, path):
        return ["/usr/bin/node", os.path.join(REPO, "runtimes", "node", "stoke_runtime.js"), path]


if __name__ == "__main__":
    unittest.main()
