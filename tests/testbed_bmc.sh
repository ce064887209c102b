#!/usr/bin/env bash
# Integration test (fixture `testbed`): host h2's BMC (ipmi_sim) switches the host's power, driven
# by ipmitool over LAN+ from the root namespace with the credentials of testbed.json. Checks: the
# host is on; a wrong password is refused; power off leaves only the BMC (ipmi_sim, bmc-serve) in
# the host's namespace; off twice is fine; power on boots the host again (the agent answers with its
# former token); on while on keeps the same power supply; daemons killed by hand leave the power on;
# cycle goes off and on again. Leaves h2 on and booted. Reads $UW_TESTBED_DIR/testbed.json.
set -euo pipefail

dir=${UW_TESTBED_DIR:-/var/tmp/uw-testbed}
tb=$dir/testbed.json
host=h2
boot_timeout=${UW_BMC_BOOT_TIMEOUT:-60}
testbed=$(dirname "$0")/../scripts/testbed
[ -f "$tb" ] || { echo "FAIL: no $tb: is the test bed up (scripts/testbed up 2)?" >&2; exit 1; }
command -v ipmitool >/dev/null || { echo "FAIL: ipmitool is missing (scripts/install-deps)" >&2; exit 1; }

read -r address port user password netns hostdir libvirt_uri agent_url agent_token < <(python3 -c '
import json, sys
h = next(h for h in json.load(open(sys.argv[1]))["hosts"] if h["name"] == sys.argv[2])
b = h["bmc"]
print(b["address"], b["port"], b["username"], b["password"], h["netns"], h["dir"], h["libvirt_uri"],
      h["agent_url"] or "-", h["agent_token"] or "-")' "$tb" "$host")

fail() { echo "FAIL: $*" >&2; exit 1; }
# -C 3: ipmi_sim does not answer ipmitool's cipher suite query, which costs ~10 s without it.
ipmi() { IPMI_PASSWORD=$password ipmitool -I lanplus -C 3 -H "$address" -p "$port" -U "$user" -E chassis power "$@"; }
expect_power() {
  local got
  got=$(ipmi status)
  [ "$got" = "Chassis Power is $1" ] || fail "$2: power status says '$got', expected $1"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# The host answers: its agent (with its token) when it has one, else libvirtd.
answers() {
  if [ "$agent_url" != - ]; then
    curl -sf -m 2 -H "Authorization: Bearer $agent_token" "$agent_url/api/v1/host" >/dev/null
  else
    virsh -c "$libvirt_uri" version >/dev/null 2>&1
  fi
}
wait_answers() {
  local deadline=$(($(date +%s) + boot_timeout))
  until answers; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$1: $host does not answer ${boot_timeout}s later (see $hostdir/power.log)"
    sleep 0.05
  done
}
netns_comms() { for p in $(ip netns pids "$netns"); do cat "/proc/$p/comm" 2>/dev/null; done | sort | tr '\n' ' '; }

expect_power on "at start"
answers || fail "$host does not answer at start"

out=$(IPMI_PASSWORD=not-the-password ipmitool -I lanplus -C 3 -H "$address" -p "$port" -U "$user" -E -N 1 -R 1 \
  chassis power status 2>&1) && fail "a wrong password was accepted: $out"
[[ "$out" == *"Unable to establish IPMI v2 / RMCP+ session"* ]] || fail "wrong password: unexpected answer '$out'"

start=$(now_ms)
ipmi off >/dev/null
expect_power off "after power off"
echo "power off: $(($(now_ms) - start)) ms"
left=$(netns_comms)
[ "$left" = "ipmi_sim uw-bmc-serve " ] || fail "after power off, $netns still runs: $left"
answers && fail "$host still answers after power off"
ipmi off >/dev/null || fail "a second power off failed"
expect_power off "after a second power off"

start=$(now_ms)
ipmi on >/dev/null
expect_power on "after power on"
wait_answers "power on"
echo "power on -> $host answers: $(($(now_ms) - start)) ms"
supply=$(cat "$hostdir/power.pid")
ipmi on >/dev/null || fail "power on while on failed"
[ "$(cat "$hostdir/power.pid")" = "$supply" ] || fail "power on while on started another power supply"

# A host whose daemons died (a hung OS) still has power.
kill -9 "$(cat "$hostdir/libvirtd.pid")"
[ "$agent_url" = - ] || kill -9 "$(cat "$hostdir/agent.pid")"
expect_power on "with libvirtd killed"

start=$(now_ms)
ipmi cycle >/dev/null
expect_power off "right after power cycle"
wait_answers "power cycle"
expect_power on "after power cycle"
virsh -c "$libvirt_uri" version >/dev/null || fail "libvirtd on $host does not answer after power cycle"
echo "power cycle -> $host answers: $(($(now_ms) - start)) ms"

"$testbed" status >/dev/null || fail "scripts/testbed status: the test bed is not all up and on at the end"
echo "PASS"
