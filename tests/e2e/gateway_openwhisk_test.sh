#!/usr/bin/env bash
# tests/e2e/gateway_openwhisk_test.sh: the official openwhisk npm client
# (tests/e2e/openwhisk/, installed by scripts/setup) against stoke-gateway
# running as it runs in production: an unprivileged user (nobody here) that
# the agent admits only as a key holder (key_required_uids). Starts its own
# stoked and gateway on a temp dir and an ephemeral loopback port and stops
# both by pid. Exits 77 (CTest's skip) when not root.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
if [[ $(id -u) -ne 0 ]]; then
  echo "gateway_openwhisk_test: needs root (it runs the gateway as another user); skipped"
  exit 77
fi
for f in build/bin/stoked build/bin/stoke build/bin/stoke-gateway; do
  [[ -x $f ]] || { echo "gateway_openwhisk_test: $f is not built"; exit 1; }
done
[[ -d tests/e2e/openwhisk/node_modules/openwhisk ]] || {
  echo "gateway_openwhisk_test: the openwhisk npm client is not installed; run scripts/setup"
  exit 1
}
work=$(mktemp -d /tmp/stoke-gw-e2e.XXXXXX)
chmod 0755 "$work"  # nobody reaches the socket and its copy of the gateway
agent_pid= gateway_pid=
cleanup() {
  for pid in $gateway_pid $agent_pid; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/stoked.conf" <<CONF
state_dir: "$work/state"
socket_path: "$work/stoke.sock"
socket_group: "nogroup"
allowed_uids: 4242
key_required_uids: 65534
pools { python: 1 node: 1 }
CONF
build/bin/stoked --config "$work/stoked.conf" 2>"$work/stoked.log" &
agent_pid=$!
for _ in $(seq 500); do [[ -S $work/stoke.sock ]] && break; sleep 0.01; done
[[ -S $work/stoke.sock ]] || { echo "gateway_openwhisk_test: stoked did not start"; cat "$work/stoked.log"; exit 1; }

stoke() { build/bin/stoke --socket "$work/stoke.sock" "$@"; }
key_a=$(stoke ns create alpha 2>/dev/null | awk '/^key /{print $2}')
key_b=$(stoke ns create beta 2>/dev/null | awk '/^key /{print $2}')
[[ -n $key_a && -n $key_b ]] || { echo "gateway_openwhisk_test: no namespace keys"; exit 1; }

# The gateway as nobody, from a copy nobody can read (the build tree may not be).
install -m 0755 build/bin/stoke-gateway "$work/stoke-gateway"
setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
  "$work/stoke-gateway" --listen 127.0.0.1:0 --socket "$work/stoke.sock" 2>"$work/gateway.log" &
gateway_pid=$!
port=
for _ in $(seq 500); do
  port=$(sed -n 's/.*serving http on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/gateway.log")
  [[ -n $port ]] && break
  sleep 0.01
done
[[ -n $port ]] || { echo "gateway_openwhisk_test: the gateway did not start"; cat "$work/gateway.log"; exit 1; }

zip_b64=$(/usr/bin/python3 - <<'PY'
import base64, io, zipfile
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    z.writestr("__main__.py", "def main(args):\n    return {'zipped': True}\n")
print(base64.b64encode(buf.getvalue()).decode())
PY
)
native=$(cat <<'PY'
#!/usr/bin/python3
import json, os, sys
out = os.fdopen(3, "w")
for line in sys.stdin:
    req = json.loads(line)
    print("native got", req["value"], flush=True)
    out.write(json.dumps({"native": True, "got": req["value"]}) + "\n")
    out.flush()
PY
)

status=0
OW_APIHOST="http://127.0.0.1:$port" OW_KEY_A="$key_a" OW_KEY_B="$key_b" OW_PYTHON_ZIP_BASE64="$zip_b64" \
  OW_NATIVE_SCRIPT="$native" node --test "$root/tests/e2e/openwhisk/openwhisk_client_test.mjs" || status=$?
if ((status != 0)); then
  echo "--- gateway log"; cat "$work/gateway.log"
  echo "--- agent log"; tail -50 "$work/stoked.log"
fi
exit $status
