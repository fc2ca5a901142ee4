#!/usr/bin/env bash
# tests/e2e/python_client_test.sh: the Python example client against a real
# agent: status as JSON, then create → invoke (sync and async) → delete of an
# exec-runtime function written in Python. Starts its own stoked (build/bin) on
# a temp state dir and socket and stops it by pid; with STOKE_SOCKET set it uses
# that agent instead. Exits 77 (CTest's skip) when not root or stoked is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d /tmp/stoke-py-e2e.XXXXXX)
agent_pid=
cleanup() {
  if [[ -n $agent_pid ]]; then kill -TERM "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
if [[ -z ${STOKE_SOCKET:-} ]]; then
  if [[ $(id -u) -ne 0 || ! -x build/bin/stoked ]]; then
    echo "python_client_test: needs root and build/bin/stoked; skipped"
    exit 77
  fi
  printf 'state_dir: "%s/state"\nsocket_path: "%s/stoke.sock"\n' "$work" "$work" >"$work/stoked.conf"
  build/bin/stoked --config "$work/stoked.conf" 2>"$work/stoked.log" &
  agent_pid=$!
  for _ in $(seq 500); do [[ -S $work/stoke.sock ]] && break; sleep 0.01; done
  [[ -S $work/stoke.sock ]] || { echo "python_client_test: stoked did not start"; cat "$work/stoked.log"; exit 1; }
  export STOKE_SOCKET=$work/stoke.sock
fi

gen=$work/gen
mkdir -p "$gen"
api/python/gen.sh "$gen" >/dev/null
export STOKE_PY_GEN=$gen

# 1. The __main__ path: status printed as JSON.
status_json=$(/usr/bin/python3 api/python/stoke_client.py status)
/usr/bin/python3 - "$status_json" <<'EOF'
import json, sys
status = json.loads(sys.argv[1])
assert status["protocol_version"] == 1, status
assert status["agent_version"], status
print(f"python_client_test: status ok (agent {status['agent_version']}, kernel {status.get('kernel')})")
EOF

# 2. The library path: a function's whole life.
/usr/bin/python3 - <<'EOF'
import json, os, sys, time
sys.path.insert(0, "api/python")
import stoke_client

name = f"pyclient-e2e-{os.getpid()}"
# An OpenWhisk actionloop executable: one JSON request per stdin line, the
# result as one JSON line on fd 3.
code = b"""#!/usr/bin/python3
import json, os, sys
out = os.fdopen(3, "w")
for line in sys.stdin:
    args = json.loads(line)["value"]
    out.write(json.dumps({"greeting": "hello " + args.get("name", "nobody")}) + "\\n")
    out.flush()
"""
with stoke_client.Client(client_name="python_client_test") as agent:
    api = agent.api
    try:
        function = agent.create_function(name, code, runtime="exec", code_file_name="action.py")
        assert function.name == name and function.version == 1, function
        assert name in [f.name for f in agent.list_functions()]

        activation = agent.invoke(name, {"name": "e2e"})
        assert activation.status == api.SUCCESS, activation
        assert json.loads(activation.result_json) == {"greeting": "hello e2e"}, activation.result_json

        activation_id = agent.invoke(name, {"name": "later"}, async_=True)
        deadline = time.monotonic() + 30
        while True:
            finished = agent.get_activation(activation_id)
            if finished.status != api.ACTIVATION_STATUS_UNSPECIFIED:
                break
            assert time.monotonic() < deadline, "async activation did not finish in 30 s"
            time.sleep(0.05)
        assert finished.status == api.SUCCESS, finished
        assert json.loads(finished.result_json) == {"greeting": "hello later"}, finished.result_json
    finally:
        try:
            agent.delete_function(name)
        except stoke_client.AgentError:
            pass
    try:
        agent.get_function(name)
        raise AssertionError("function still exists after delete")
    except stoke_client.AgentError as e:
        assert e.code_name == "NOT_FOUND", e
print("python_client_test: create/invoke/async/delete ok")
EOF
echo "python_client_test: PASS"
