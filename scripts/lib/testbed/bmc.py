"""Each host's BMC: OpenIPMI's ipmi_sim in the host's network namespace, answering IPMI 2.0 LAN+
(RMCP+) on the host's address, UDP 623, for one user (admin, with the test bed's password; IPMI 1.5
sessions are refused). ipmi_sim runs its chassis_control program for chassis commands:
`scripts/testbed bmc-chassis hN get power | set power 0|1 | set reset 1 | set shutdown 1 ...`
(chassis_control below), which switches the host's power (power.py). The BMC lives in its own
cgroup (uw-testbed/hN-bmc) and stays up while the host is off.

ipmi_sim's own power model (startcmd, startnow, poweroff_wait, kill_wait) is not used: without a
VM serial channel (codec VM) it answers `chassis power on|off` with "Invalid data field".
"""

import os
import re

from .cgroup import spawn_daemon
from .process import TestbedError, alive, log, read_text, remove, stop_pidfile, wait_until, write_text
from .power import TESTBED_PROGRAM, cut_power, is_on, power_on, soft_off

BMC_PORT = 623
BMC_USER = "admin"
BMC_COMM = "ipmi_sim"

# lan.conf (ipmi_lan(5)). No allowed_auths_* lines: IPMI 1.5 sessions are refused, RMCP+ works.
LAN_CONF = """\
# ipmi_sim configuration of test bed host {name}'s BMC (scripts/testbed, docs/testbed.md).
name "uw-{name}"
set_working_mc 0x20
  startlan 1
    addr {address} {port}
    priv_limit admin
    guid {guid}
  endlan
  chassis_control "{control}"
  user 2 true "{user}" "{password}" admin 10 md5
"""
# ipmi_sim_cmd(5): one management controller, the BMC, with chassis support (device support 0x9f),
# the identity of OpenIPMI's sample ipmisim1.emu.
BMC_EMU = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
mc_enable 0x20
"""


def bmc_password(testbed):
    """The test bed's BMC password: 16 hex digits in DIR/bmc.password (mode 0600), made on first
    use; `down` removes it."""
    path = os.path.join(testbed.dir, "bmc.password")
    password = read_text(path, "")
    if not re.fullmatch(r"[0-9a-f]{16}", password):
        password = os.urandom(8).hex()
        write_text(path, password + "\n", mode=0o600)
    return password


def bmc_description(host):
    """HOST's `bmc` in testbed.json, in the shape of the manager's ipmi power driver."""
    return {"driver": "ipmi", "address": host.address, "port": BMC_PORT, "username": BMC_USER,
            "password": bmc_password(host.testbed)}


def bmc_alive(host):
    return alive(host.file("bmc.pid"), BMC_COMM) is not None


def udp_listening(pid, address, port):
    """Process PID's network namespace has a UDP socket bound to ADDRESS:PORT (/proc/PID/net/udp)."""
    want = "".join(f"{int(octet):02X}" for octet in reversed(address.split("."))) + f":{port:04X}"
    table = read_text(f"/proc/{pid}/net/udp", "")
    return any(line.split()[1] == want for line in table.splitlines()[1:] if len(line.split()) > 1)


def write_bmc_config(host):
    """DIR/hN/bmc/: lan.conf (mode 0600: the password), bmc.emu, an empty state directory."""
    bmc_dir = host.file("bmc")
    os.makedirs(bmc_dir, exist_ok=True)
    os.chmod(bmc_dir, 0o700)
    for path in (TESTBED_PROGRAM, host.testbed.dir):
        if not re.fullmatch(r"[A-Za-z0-9_./+-]+", path):
            raise TestbedError(f"{path}: the BMC's chassis_control command cannot quote this path")
    control = (f"UW_TESTBED_DIR={host.testbed.dir} UW_TESTBED_TIMEOUT={host.testbed.timeout_s:g} "
               f"{TESTBED_PROGRAM} bmc-chassis {host.name}")
    write_text(os.path.join(bmc_dir, "lan.conf"),
               LAN_CONF.format(name=host.name, address=host.address, port=BMC_PORT, guid=host.uuid().replace("-", ""),
                               control=control, user=BMC_USER, password=bmc_password(host.testbed)),
               mode=0o600)
    write_text(os.path.join(bmc_dir, "bmc.emu"), BMC_EMU)
    remove(os.path.join(bmc_dir, "state"))
    os.makedirs(os.path.join(bmc_dir, "state"))


def start_bmc(host):
    """Starts HOST's BMC (ipmi_sim, pid in DIR/hN/bmc.pid) in the host's network namespace and its
    own cgroup, and waits until it listens. `nsenter --net`, not `ip netns exec`: the latter
    remounts /sys, which would hide the cgroup hierarchies from the chassis_control program."""
    write_bmc_config(host)
    conf = host.file("bmc")
    log_path = os.path.join(conf, "ipmi_sim.log")
    sim = spawn_daemon(["nsenter", f"--net=/run/netns/{host.netns}", "ipmi_sim", "-n", "-p",
                        "-c", os.path.join(conf, "lan.conf"), "-f", os.path.join(conf, "bmc.emu"),
                        "-s", os.path.join(conf, "state")],
                       log_path, append=False, cgroup=host.bmc_cgroup)
    write_text(host.file("bmc.pid"), f"{sim.pid}\n")
    what = f"the BMC of {host.name} on {host.address}:{BMC_PORT}"
    listening = wait_until(host.testbed.timeout_s, what,
                           lambda: sim.poll() is not None or udp_listening(sim.pid, host.address, BMC_PORT))
    if not listening or sim.poll() is not None:
        raise TestbedError(f"{what} did not start: {read_text(log_path, '').strip() or 'no output'} (log: {log_path})")


def stop_bmc(host):
    stop_pidfile(host.file("bmc.pid"), BMC_COMM, 5)


def chassis_control(host, args):
    """ipmi_sim's chassis_control protocol (OpenIPMI's lanserv/ipmi_sim_chassiscontrol): ARGS is
    `get PARM...` (prints PARM:VALUE lines) or `set PARM VALUE...` (prints nothing). Switches HOST's
    power: power 1 on, power 0 off at once, reset 1 off then on (when on), shutdown 1 soft off
    (`chassis power soft`); boot devices and identify are accepted and ignored. Errors go to stdout,
    which ipmi_sim logs, with exit status 1 (ipmi_sim answers "unspecified error")."""
    if not args or args[0] not in ("get", "set"):
        print(f"expected get or set, got {' '.join(args) or 'nothing'}")
        return 1
    op, parms = args[0], args[1:]
    if op == "get":
        values = {"power": lambda: "1" if is_on(host) else "0", "boot": lambda: "default"}
        unknown = [p for p in parms if p not in values]
        if unknown:
            print(f"cannot get {' '.join(unknown)}")
            return 1
        print("".join(f"{p}:{values[p]()}\n" for p in parms), end="")
        return 0
    if len(parms) % 2:
        print(f"set needs PARM VALUE pairs, got {' '.join(parms)}")
        return 1
    for parm, value in zip(parms[::2], parms[1::2]):
        if parm == "power" and value in ("0", "1"):
            log(f"BMC of {host.name}: power {'on' if value == '1' else 'off'}")
            if value == "1":
                power_on(host)
            else:
                cut_power(host)
        elif parm == "reset" and value == "1":
            log(f"BMC of {host.name}: reset")
            if is_on(host):
                cut_power(host)
                power_on(host)
        elif parm == "shutdown" and value == "1":
            log(f"BMC of {host.name}: soft off")
            soft_off(host)
        elif parm not in ("boot", "identify"):
            print(f"cannot set {parm} to {value}")
            return 1
    return 0
