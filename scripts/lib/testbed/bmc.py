"""Each host's BMC: OpenIPMI's ipmi_sim in the host's network namespace, answering IPMI 2.0 LAN+
(RMCP+) on the host's address, UDP 623, for one user (admin, with the test bed's password; IPMI 1.5
sessions are refused). ipmi_sim runs its chassis_control program for chassis commands:
`scripts/testbed bmc-chassis hN get power | set power 0|1 | set reset 1 | set shutdown 1 ...`
(chassis_control below), which switches the host's power (power.py). Beside it runs
`scripts/testbed bmc-serve hN` (bmcserve.py): a Redfish service on HTTPS 443 (a self-signed
certificate made here with openssl) and a Wake-on-LAN listener on UDP 9, the two other ways the
manager switches a host. The BMC lives in its own cgroup (uw-testbed/hN-bmc) and stays up while the
host is off.

ipmi_sim's own power model (startcmd, startnow, poweroff_wait, kill_wait) is not used: without a
VM serial channel (codec VM) it answers `chassis power on|off` with "Invalid data field".
"""

import os
import re

from .cgroup import spawn_daemon
from .network import SUBNET
from .process import TestbedError, alive, log, read_text, remove, run, stop_pidfile, wait_until, write_text
from .power import TESTBED_PROGRAM, cut_power, is_on, power_on, soft_off, supply_env

BMC_PORT = 623
BMC_USER = "admin"
BMC_COMM = "ipmi_sim"
REDFISH_PORT = 443
WOL_PORT = 9
SERVE_COMM = "uw-bmc-serve"  # /proc/PID/comm bmc-serve gives itself (prctl), so pid files can check it
# bmc-serve's files in DIR/hN/bmc/: its certificate and key (`down` removes them), its log.
REDFISH_CERT, REDFISH_KEY, SERVE_LOG = "redfish.crt", "redfish.key", "bmc-serve.log"

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


def redfish_description(host):
    """HOST's `redfish` in testbed.json, in the shape of the manager's redfish power driver: the
    BMC's URL, user, password and the PEM text of its self-signed certificate (the CA to trust)."""
    return {"driver": "redfish", "url": f"https://{host.address}", "username": BMC_USER,
            "password": bmc_password(host.testbed),
            "ca_cert": read_text(os.path.join(host.file("bmc"), REDFISH_CERT), "") + "\n"}


def wol_description(host):
    """HOST's `wol` in testbed.json, in the shape of the manager's wol power driver: the MAC of the
    host's eth0 and the subnet's broadcast address, where bmc-serve listens for magic packets."""
    return {"driver": "wol", "mac": host.mac(), "broadcast": f"{SUBNET}.255", "port": WOL_PORT}


def bmc_alive(host):
    """Both BMC processes run: ipmi_sim and bmc-serve (Redfish, Wake-on-LAN)."""
    return (alive(host.file("bmc.pid"), BMC_COMM) is not None
            and alive(host.file("bmc-serve.pid"), SERVE_COMM) is not None)


def listening(pid, proto, address, port):
    """Process PID's network namespace has a socket bound to ADDRESS:PORT (/proc/PID/net/udp or
    tcp, PROTO); a TCP one must be listening (state 0A)."""
    want = "".join(f"{int(octet):02X}" for octet in reversed(address.split("."))) + f":{port:04X}"
    table = read_text(f"/proc/{pid}/net/{proto}", "")
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[1] == want and (proto == "udp" or fields[3] == "0A"):
            return True
    return False


def udp_listening(pid, address, port):
    """Process PID's network namespace has a UDP socket bound to ADDRESS:PORT."""
    return listening(pid, "udp", address, port)


def tcp_listening(pid, address, port):
    """Process PID's network namespace has a TCP socket listening on ADDRESS:PORT."""
    return listening(pid, "tcp", address, port)


def make_certificate(host):
    """DIR/hN/bmc/redfish.crt and redfish.key (mode 0600): a self-signed P-256 certificate for
    uw-hN-bmc with the host's address as subject alternative name, valid 7 days; made anew each
    time the BMC starts (as the BMC password is per test bed, the certificate is per BMC)."""
    bmc_dir = host.file("bmc")
    cert, key = os.path.join(bmc_dir, REDFISH_CERT), os.path.join(bmc_dir, REDFISH_KEY)
    remove(cert, key)
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "7", "-subj", f"/CN=uw-{host.name}-bmc", "-addext", f"subjectAltName=IP:{host.address}",
         "-keyout", key, "-out", cert])
    os.chmod(key, 0o600)


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
    make_certificate(host)


def start_bmc(host):
    """Starts HOST's BMC (ipmi_sim, pid in DIR/hN/bmc.pid, then bmc-serve) in the host's network
    namespace and its own cgroup, and waits until it listens. `nsenter --net`, not `ip netns exec`:
    the latter remounts /sys, which would hide the cgroup hierarchies from the chassis_control
    program (and from bmc-serve, which switches the power itself)."""
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
    start_bmc_serve(host)


def start_bmc_serve(host):
    """Starts `scripts/testbed bmc-serve hN` (pid in DIR/hN/bmc-serve.pid) beside ipmi_sim, in the
    same namespace and cgroup, with the test bed's directory in its environment, and waits until it
    listens on HTTPS (the host's address, 443) and for Wake-on-LAN (0.0.0.0, UDP 9)."""
    log_path = os.path.join(host.file("bmc"), SERVE_LOG)
    serve = spawn_daemon(["nsenter", f"--net=/run/netns/{host.netns}", TESTBED_PROGRAM, "bmc-serve", host.name],
                         log_path, append=False, cgroup=host.bmc_cgroup, env=supply_env(host.testbed))
    write_text(host.file("bmc-serve.pid"), f"{serve.pid}\n")
    what = f"the Redfish and Wake-on-LAN BMC of {host.name} on {host.address}:{REDFISH_PORT}, UDP {WOL_PORT}"
    ready = wait_until(host.testbed.timeout_s, what,
                       lambda: serve.poll() is not None or (tcp_listening(serve.pid, host.address, REDFISH_PORT)
                                                            and udp_listening(serve.pid, "0.0.0.0", WOL_PORT)))
    if not ready or serve.poll() is not None:
        raise TestbedError(f"{what} did not start: {read_text(log_path, '').strip() or 'no output'} (log: {log_path})")


def stop_bmc(host):
    stop_pidfile(host.file("bmc-serve.pid"), SERVE_COMM, 5)
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
