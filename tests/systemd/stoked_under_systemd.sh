#!/usr/bin/env bash
# Runs inside the pure cgroup v2 guest booted with systemd as pid 1
# (scripts/test-systemd, via scripts/v2vm/run --systemd): stoked started from
# the packaged units, exactly as shipped except for where the binary lives and
# a short watchdog, and checked from the outside the way an operator would.
#
# Proves: socket activation (the first client starts the agent and is served),
# Type=notify readiness, the watchdog (pings keep a live agent running), the
# delegated cgroup subtree (sandboxes' groups below the unit's, the agent in
# its own leaf), functions running (exec, Python, Node; an OOM and a timeout
# reported), Restart=on-failure after kill -9 with the socket kept and the
# crashed agent's sandboxes cleaned, and a clean stop (nothing left in the
# unit's group).
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=$repo/build/bin
stoke=$bin/stoke
failures=0
pass() { echo "systemd-check: ok   $*"; }
fail() { echo "systemd-check: FAIL $*"; failures=$((failures + 1)); }
check() {  # check DESCRIPTION COMMAND...: passes when COMMAND succeeds
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
prop() { systemctl show -P "$2" "$1"; }
json() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
wait_for() {  # wait_for SECONDS COMMAND...: until COMMAND succeeds
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS >= deadline)) && return 1
    sleep 0.5
  done
}

echo "systemd-check: $(systemctl --version | head -1); cgroup $(stat -fc %T /sys/fs/cgroup)"
work=$(mktemp -d /tmp/stoke-systemd.XXXXXX)
chmod 755 "$work"

# ---- the packaged units, installed as a package would ----------------------
units=/etc/systemd/system
install -m 644 "$repo/packaging/stoked.service" "$repo/packaging/stoked.socket" $units/
mkdir -p $units/stoked.service.d
# Only the binary's path (a source tree, not /usr/local/bin) and a short
# watchdog (so that a broken ping shows within this run) differ.
cat >$units/stoked.service.d/test.conf <<EOF
[Service]
ExecStart=
ExecStart=$bin/stoked
WatchdogSec=4s
EOF
# The agent's own config: the defaults, with debug logs for a failure's story.
mkdir -p /etc/stoke
echo 'log_level: "debug"' >/etc/stoke/stoked.conf
systemctl daemon-reload
check "the units load" test "$(prop stoked.service LoadState)" = loaded
check "stoked.socket starts" systemctl start stoked.socket
check "nothing runs before the first client" test "$(prop stoked.service ActiveState)" = inactive

# ---- socket activation, readiness ------------------------------------------
# The first client's connection waits in the socket's backlog while systemd
# starts the agent; it must be answered, not refused.
if "$stoke" status --json >"$work/status.json" 2>"$work/status.err"; then
  pass "the first client is served through socket activation"
else
  fail "the first client is served through socket activation: $(cat "$work/status.err")"
fi
check "stoked.service is active (Type=notify: READY=1 was sent)" \
  test "$(prop stoked.service ActiveState)/$(prop stoked.service SubState)" = active/running
check "the unit is Type=notify with a watchdog" \
  test "$(prop stoked.service Type)/$(prop stoked.service WatchdogUSec)" = notify/4s
main_pid=$(prop stoked.service MainPID)
unit_cg=/sys/fs/cgroup$(prop stoked.service ControlGroup)
check "status reports cgroup v2" test "$(json 'd["cgroupVersion"]' <"$work/status.json")" = v2
check "status reports the memory, cpu and pids controllers" test "$(json '",".join(sorted(set(d["cgroupControllers"]) & {"memory","cpu","pids"}))' <"$work/status.json")" = cpu,memory,pids
check "sandboxes' groups are made below the unit's delegated group ($unit_cg)" \
  test "$(json 'all(p.startswith("'"$unit_cg"'/") for p in d["cgroupParents"]) and len(d["cgroupParents"]) > 0' <"$work/status.json")" = True
check "the agent moved itself into a leaf of its group (no internal processes)" \
  grep -qx "0::$(prop stoked.service ControlGroup)/stoke/supervisor" "/proc/$main_pid/cgroup"

# ---- functions --------------------------------------------------------------
cat >"$work/echo.sh" <<'EOF'
#!/bin/sh
read -r line
echo '{"echo":true}' >&3
EOF
chmod 755 "$work/echo.sh"
cat >"$work/hello.py" <<'EOF'
def main(args):
    return {"hello": args.get("name", "world")}
EOF
cat >"$work/hello.js" <<'EOF'
exports.main = (args) => ({ hello: args.name || "world" });
EOF
cat >"$work/hog.py" <<'EOF'
import time
def main(args):
    if args.get("sleep"):
        time.sleep(args["sleep"])
    return {"n": len(bytearray(args.get("mb", 0) << 20))}
EOF
check "an exec function is created" "$stoke" fn create echo --runtime exec --code "$work/echo.sh"
check "a Python function is created" "$stoke" fn create hello --runtime python --code "$work/hello.py" --memory 64M
check "a Node.js function is created" "$stoke" fn create hellojs --runtime node --code "$work/hello.js" --memory 128M
check "a hog is created" "$stoke" fn create hog --runtime python --code "$work/hog.py" --memory 64M --timeout 3s
invoke_status() {  # invoke_status EXPECTED NAME ARGS...
  local want=$1 name=$2
  shift 2
  local got
  got=$("$stoke" invoke "$name" "$@" --json 2>/dev/null | json 'd["status"]')
  [[ $got == "$want" ]] || { echo "systemd-check: $name answered ${got:-nothing}, expected $want"; return 1; }
}
check "exec function: success" invoke_status success echo
check "Python function: success" invoke_status success hello -p name=systemd
check "Node.js function: success" invoke_status success hellojs -p name=systemd
check "Python function again (warm): success" invoke_status success hello
check "a function over its memory limit: oom" invoke_status oom hog -p mb=256
check "a function over its time limit: timeout" invoke_status timeout hog -p sleep=10

# ---- watchdog ------------------------------------------------------------------
# WatchdogSec=4s: an agent that stopped pinging would be killed and restarted
# within this wait; a live one keeps its pid.
sleep 10
check "the watchdog keeps a live agent running (same pid, no restart after 10 s)" \
  test "$(prop stoked.service MainPID)/$(prop stoked.service NRestarts)" = "$main_pid/0"

# ---- crash: kill -9, Restart=on-failure, the socket kept -----------------------
crashed=$main_pid
kill -9 "$crashed"
wait_for 30 sh -c "test \"\$(systemctl show -P MainPID stoked.service)\" != 0 && test \"\$(systemctl show -P MainPID stoked.service)\" != $crashed && test \"\$(systemctl show -P ActiveState stoked.service)\" = active"
new_pid=$(prop stoked.service MainPID)
sleep 1  # the restarted agent's prewarm has run by now
for d in $(find "$unit_cg" -type d); do
  [[ -s $d/cgroup.procs ]] && echo "systemd-check: after the restart, ${d#$unit_cg}: $(tr '\n' ' ' <"$d/cgroup.procs")"
done
check "the restarted agent makes its sandboxes (no cgroup error in its log)" \
  sh -c "! journalctl -u stoked.service -o cat _PID=$new_pid 2>/dev/null | grep -q 'create cgroup'"
check "systemd restarts the agent after kill -9 (pid $crashed -> $new_pid)" test "$new_pid" != "$crashed" -a "$new_pid" != 0
check "NRestarts counts the restart" test "$(prop stoked.service NRestarts)" = 1
check "functions survive the crash and are served again" invoke_status success hello -p name=again
leftovers=$(find "$unit_cg" -type d -name "sb-$crashed-*" 2>/dev/null | wc -l)
check "the crashed agent's sandbox groups are gone" test "$leftovers" = 0

# ---- the HTTP gateway: its own unprivileged user, admitted only with a key ------
# As packaging/README.md installs it: the sysusers entries, the socket's group
# for the gateway, the gateway's uid as key_required_uids, then its unit.
check "systemd-sysusers applies packaging/stoke.sysusers" systemd-sysusers "$repo/packaging/stoke.sysusers"
gateway_uid=$(id -u stoke-gateway 2>/dev/null || echo none)
check "the gateway's user exists and is in the socket's group" sh -c "id -nG stoke-gateway | grep -qw stoke"
systemctl stop stoked.service stoked.socket
mkdir -p $units/stoked.socket.d $units/stoke-gateway.service.d
printf '[Socket]\nSocketGroup=stoke\n' >$units/stoked.socket.d/gateway.conf
printf 'log_level: "debug"\nkey_required_uids: %s\n' "$gateway_uid" >/etc/stoke/stoked.conf
install -m 644 "$repo/packaging/stoke-gateway.service" $units/
# The binary lives in the source tree, which may be under /root or /home.
printf '[Service]\nExecStart=\nExecStart=%s/stoke-gateway --listen 127.0.0.1:3233 --socket /run/stoke/stoke.sock\nProtectHome=no\n' \
  "$bin" >$units/stoke-gateway.service.d/test.conf
systemctl daemon-reload
check "stoked.socket starts again, group stoke" systemctl start stoked.socket
check "stoke-gateway.service starts" systemctl start stoke-gateway.service
gateway_key=$("$stoke" ns create web 2>/dev/null | awk '/^key /{print $2}')
check "a namespace is made for the gateway's client" test -n "$gateway_key"
check "a function is created in it" "$stoke" fn create hello --namespace web --runtime python --code "$work/hello.py" --memory 64M
check "the gateway answers on 127.0.0.1:3233" wait_for 20 curl -sf -o /dev/null -u "$gateway_key" http://127.0.0.1:3233/api/v1/namespaces
got=$(curl -s -u "$gateway_key" -X POST -H 'Content-Type: application/json' -d '{"name":"gateway"}' \
  "http://127.0.0.1:3233/api/v1/namespaces/_/actions/hello?blocking=true&result=true")
check "an invocation through the gateway under systemd returns the result ($got)" test "$got" = '{"hello":"gateway"}'
check "no key: 401" test "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:3233/api/v1/namespaces/_/actions)" = 401
check "the gateway runs as its own user with no capability" \
  sh -c "grep -q '^Uid:.*$gateway_uid' /proc/$(prop stoke-gateway.service MainPID)/status && grep -q '^CapEff:.*0000000000000000' /proc/$(prop stoke-gateway.service MainPID)/status"
check "stoke-gateway.service stops" systemctl stop stoke-gateway.service

# ---- clean stop ----------------------------------------------------------------
check "systemctl stop stoked.service succeeds" systemctl stop stoked.service
check "the service is inactive, not failed" test "$(prop stoked.service ActiveState)" = inactive
if [[ -d $unit_cg ]]; then
  procs=$(find "$unit_cg" -name cgroup.procs -exec cat {} + 2>/dev/null | wc -l)
else
  procs=0
fi
check "no process is left in the unit's group" test "$procs" = 0
check "the socket stays for the next client" test "$(prop stoked.socket ActiveState)" = active
check "the next client starts the agent again" "$stoke" status --json >/dev/null

systemctl stop stoked.service stoked.socket
# Every sandbox the agents made started (prewarm, zygotes, images included).
journalctl -u stoked.service --no-pager -o cat >"$work/journal" 2>/dev/null
grep -E ' (warning|error|critical) ' "$work/journal" | sed 's/^/systemd-check: journal: /'
check "no sandbox failed to start in any of the agents' lives" sh -c "! grep -q 'did not start' '$work/journal'"
if ((failures > 0)); then
  grep -B 80 -A 5 'did not start' "$work/journal" | sed 's/^/systemd-check: journal: /'
  echo "systemd-check: $failures check(s) failed"
  exit 1
fi
rm -rf "$work"
echo "systemd-check: all checks passed"
