#!/usr/bin/env bash
# Integration test (fixture `testbed`): boots the test guest through libvirt on host h1 of the test
# bed, waits for its ready marker on the serial console and for its control channel to open, then
# destroys it. Reads $UW_TESTBED_DIR/testbed.json (default dir /var/tmp/uw-testbed).
set -euo pipefail

dir=${UW_TESTBED_DIR:-/var/tmp/uw-testbed}
tb=$dir/testbed.json
marker_timeout=${UW_SMOKE_TIMEOUT:-120}
[ -f "$tb" ] || { echo "FAIL: no $tb: is the test bed up (scripts/testbed up 2)?" >&2; exit 1; }

# testbed.json is written by scripts/testbed with one host per line; no jq needed.
field() { sed -n "s/.*\"$1\": \"\\([^\"]*\\)\".*/\\1/p" "$tb" | head -n 1; }
uri=$(grep '"name": "h1"' "$tb" | sed -n 's/.*"libvirt_uri": "\([^"]*\)".*/\1/p')
kernel=$(field kernel)
initrd=$(field initrd)
[ -n "$uri" ] && [ -n "$kernel" ] && [ -n "$initrd" ] || { echo "FAIL: cannot read h1/guest from $tb" >&2; exit 1; }

name=uw-smoke-$$
work=$dir/tests/$name
mkdir -p "$work"
log=$work/serial.log
cleanup() {
  virsh -c "$uri" destroy "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/domain.xml" <<EOF
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>$kernel</kernel>
    <initrd>$initrd</initrd>
    <cmdline>console=ttyS0 quiet</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <serial type='pty'>
      <log file='$log' append='off'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <source mode='bind'/>
      <target type='virtio' name='org.underware.guest.0'/>
    </channel>
    <memballoon model='virtio'><stats period='1'/></memballoon>
  </devices>
</domain>
EOF

start=$(date +%s%N)
virsh -c "$uri" create "$work/domain.xml" >/dev/null
# Wait on the marker itself (tail -F follows the log through inotify), bounded by a timeout.
line=
while IFS= read -r l; do
  case "$l" in *UW-GUEST-READY*) line=${l%$'\r'}; break ;; esac
done < <(exec timeout "$marker_timeout" tail -n +1 -F "$log" 2>/dev/null)
kill $! 2>/dev/null || true
if [ -z "$line" ]; then
  echo "FAIL: no UW-GUEST-READY from $name on h1 within ${marker_timeout}s; serial log:" >&2
  cat "$log" >&2 || true
  exit 1
fi
ms=$((($(date +%s%N) - start) / 1000000))
echo "marker after ${ms} ms: $line"
[[ "$line" =~ cpus=1\ memtotal_kb=[0-9]+ ]] || { echo "FAIL: malformed marker: $line" >&2; exit 1; }

# The guest opened its control channel before printing the marker; libvirt learns it from a QEMU
# event it handles asynchronously, so allow it a moment.
connected=0
deadline=$(($(date +%s) + 15))
while [ "$(date +%s)" -lt "$deadline" ]; do
  if virsh -c "$uri" dumpxml "$name" | grep -q "name='org.underware.guest.0' state='connected'"; then
    connected=1
    break
  fi
  sleep 0.1
done
if [ $connected -eq 0 ]; then
  echo "FAIL: control channel org.underware.guest.0 is not connected" >&2
  virsh -c "$uri" dumpxml "$name" | grep -A3 '<channel' >&2 || true
  exit 1
fi

virsh -c "$uri" destroy "$name" >/dev/null
if virsh -c "$uri" list --name | grep -qx "$name"; then
  echo "FAIL: $name still running after destroy" >&2
  exit 1
fi
echo "PASS"
