"""Underware test bed: N "hosts" on one machine, each a network namespace with its own libvirtd (and
uw-agent when given) and a BMC (ipmi_sim), joined by a bridge. Run as root. See docs/testbed.md.

  scripts/testbed up N [--agent PATH] [--manager URL --join-token T] [--ceph [memstore|bluestore]]
                                        start (idempotent; converges a half-started test bed);
                                        with --manager the agents join that uw-manager; with --ceph
                                        also a single-node Ceph on 10.77.0.254 (scripts/ceph, DIR/ceph;
                                        default memstore); without it a Ceph that is up is stopped
  scripts/testbed down                  stop what `up` started and remove it (idempotent)
  scripts/testbed status                one line per host; exit 0 when everything is up and on
  scripts/testbed exec hN CMD...        run CMD inside host hN's namespaces (virsh -c qemu:///system ...)
  scripts/testbed crash hN              host hN's OS dies: its libvirtd, agent, QEMU and every other
                                        process of it are killed; its power stays on (the BMC says on)
  scripts/testbed soft-off hN           host hN's OS shuts it down (as `chassis power soft`); returns at
                                        once (the agent's shutdown_command)
  ipmitool -I lanplus -C 3 -H 10.77.0.N -U admin -P PASSWORD chassis power status|on|off|cycle|soft
                                        host hN's BMC (the password is in DIR/testbed.json); also Redfish
                                        on https://10.77.0.N and Wake-on-LAN on UDP 9 (docs/testbed.md)
Run by the test bed itself:
  scripts/testbed power-run hN          host hN's power supply: boots it, runs while it is on
  scripts/testbed bmc-chassis hN get|set ...   the BMC's chassis_control program
  scripts/testbed bmc-serve hN          the BMC's Redfish service and Wake-on-LAN listener

Env: UW_TESTBED_DIR      state directory (default /var/tmp/uw-testbed)
     UW_AGENT_BIN        agent binary when --agent is not given
     UW_TESTBED_TIMEOUT  seconds to wait for each daemon to answer (default 60)
Exit: 0 done (status: everything up), 1 error (status: something down), 2 usage, 3 status: down.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

from .bmc import BMC_COMM, SERVE_COMM, bmc_alive, chassis_control
from .ceph import STORES as CEPH_STORES, Cluster as CephCluster, Settings as CephSettings
from .cgroup import CGROUP_NAME, cg_join, cg_remove
from .host import Host
from .network import BRIDGE, BRIDGE_ADDR, bridge_owner, netns_exists, netns_pids, setup_bridge, teardown_bridge
from .power import SUPPLY_COMM, is_on, run_supply, soft_off, wait_booted
from .process import TestbedError, alive, have, log, read_text, remove, run, write_text
from .statedir import Testbed

MAX_HOSTS = 200
# The test bed's Ceph (--ceph): monitor on BRIDGE_ADDR, msgr v1 on this port, v2 on the next, OSD on
# CEPH_MON_PORT+11..+60 (tests/ceph.cmake's Ceph on 127.0.0.1 uses other ports: both can be up).
CEPH_MON_PORT = 16789
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def usage():
    """Prints the usage (this module's docstring) and exits 2."""
    print(__doc__.rstrip(), file=sys.stderr)
    sys.exit(2)


# ---- testbed.json -------------------------------------------------------------------------------

def description(testbed):
    """testbed.json's content."""
    g = testbed.guest_dir
    manifest_path = os.path.join(g, "manifest.json")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            kernel = json.load(f)["kernel"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TestbedError(f"cannot read the guest's kernel from {manifest_path}: {e}") from None
    with_agent = bool(testbed.state.agent_bin)
    return {
        "dir": testbed.dir,
        "bridge": {"name": BRIDGE, "address": BRIDGE_ADDR},
        "hosts": [Host(testbed, n).description(with_agent) for n in range(1, testbed.state.hosts + 1)],
        "guest": {
            "vmlinux": os.path.join(g, "vmlinux") if os.path.isfile(os.path.join(g, "vmlinux")) else None,
            "vmlinuz": os.path.join(g, "vmlinuz"),
            "kernel": kernel,
            "initrd": os.path.join(g, "initrd.img"),
            "lxc_rootfs": os.path.join(g, "lxc-rootfs"),
            "lxc_init": "/sbin/uw-container-init",
            "cmdline": "console=ttyS0 quiet",
            "ready_marker": "UW-GUEST-READY",
            "channel": "org.underware.guest.0",
            "manifest": manifest_path,
        },
        "ceph": ceph_description(testbed),
    }


def ceph_cluster(testbed):
    return CephCluster(os.path.join(testbed.dir, "ceph"), testbed.timeout_s)


def ceph_description(testbed):
    """DIR/ceph/ceph.json's content when the test bed has a Ceph (up --ceph), else None."""
    path = ceph_cluster(testbed).description_file
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise TestbedError(f"cannot read {path}: {e}") from None


def render_testbed_json(doc):
    """json.dumps(doc, indent=2), except that the bridge and each host are on one line (shell tests
    `grep '"name": "h1"'` to find a host's line)."""
    parts = []
    for key, value in doc.items():
        if key == "hosts":
            body = "[" + ",".join("\n    " + json.dumps(h) for h in value) + "\n  ]"
        elif key == "bridge":
            body = json.dumps(value)
        else:
            body = json.dumps(value, indent=2).replace("\n", "\n  ")
        parts.append(f"  {json.dumps(key)}: {body}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def write_description(testbed):
    """Writes DIR/testbed.json (last step of `up`: its presence means the test bed is up), mode 0600:
    it holds the agents' tokens and the BMC password."""
    write_text(os.path.join(testbed.dir, "testbed.json"), render_testbed_json(description(testbed)), mode=0o600)


# ---- commands ---------------------------------------------------------------------------------

def testbed_from_env():
    testbed_dir = os.environ.get("UW_TESTBED_DIR") or "/var/tmp/uw-testbed"
    timeout = os.environ.get("UW_TESTBED_TIMEOUT") or "60"
    try:
        timeout_s = float(timeout)
    except ValueError:
        raise TestbedError(f"UW_TESTBED_TIMEOUT must be a number of seconds (got {timeout})") from None
    return Testbed(testbed_dir, timeout_s)


def require_root():
    if os.geteuid() != 0:
        raise TestbedError("must run as root")


def preflight(testbed):
    require_root()
    for tool in ("ip", "nsenter", "unshare", "virsh", "libvirtd", "virtlogd", "ipmi_sim", "openssl"):
        if not have(tool):
            raise TestbedError(f"missing {tool}: run scripts/install-deps")
    d = testbed.dir
    hidden = ("/run", "/etc/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")
    if d == "/run" or d.startswith("/run/") or any(d.startswith(h) for h in hidden[1:]):
        raise TestbedError(f"UW_TESTBED_DIR={d} is hidden inside hosts by their private mounts; pick another directory")
    if not d.startswith("/"):
        raise TestbedError(f"UW_TESTBED_DIR must be an absolute path (got {d})")


def parse_up_args(args):
    """(count, agent, manager, join_token, ceph_store) from `up`'s arguments (ceph_store "" without
    --ceph); exits 2 on a malformed line."""
    opts = {"--agent": os.environ.get("UW_AGENT_BIN", ""), "--manager": "", "--join-token": ""}
    count, ceph = None, ""
    i = 0
    while i < len(args):
        a = args[i]
        name, eq, value = a.partition("=")
        if a in ("-h", "--help"):
            usage()
        elif a == "--ceph":  # its store is optional
            ceph = "memstore"
            if i + 1 < len(args) and args[i + 1] in CEPH_STORES:
                ceph = args[i + 1]
                i += 1
        elif eq and name == "--ceph":
            if value not in CEPH_STORES:
                raise TestbedError(f"--ceph takes memstore or bluestore (got {value})")
            ceph = value
        elif a in opts:
            if i + 1 >= len(args):
                usage()
            opts[a] = args[i + 1]
            i += 1
        elif eq and name in opts:
            opts[name] = value
        elif count is None:
            count = a
        else:
            usage()
        i += 1
    return count, opts["--agent"], opts["--manager"], opts["--join-token"], ceph


def cmd_up(args):
    count, agent, manager, join, ceph = parse_up_args(args)
    if count is None or not re.fullmatch(r"[0-9]+", count) or not 1 <= int(count) <= MAX_HOSTS:
        raise TestbedError(f"up needs a host count (1..{MAX_HOSTS})")
    want = int(count)
    if agent:
        if not os.access(agent, os.X_OK):
            raise TestbedError(f"agent binary {agent} is not executable")
        agent = os.path.abspath(agent)
    if manager:
        if not agent:
            raise TestbedError("--manager needs --agent (the agents are what joins the manager)")
        if not join:
            raise TestbedError("--manager needs --join-token (the join_token of the manager's config)")
        if not re.match(r"https?://", manager):
            raise TestbedError(f"--manager must be a URL (http://ADDRESS:PORT), got '{manager}'")
    testbed = testbed_from_env()
    preflight(testbed)
    testbed.lock()
    claim_machine(testbed)
    state = testbed.state.load()
    if state.hosts > 0 and state.hosts != want:
        raise TestbedError(f"the test bed is up with {state.hosts} hosts; run '{sys.argv[0]} down' first")
    started = time.monotonic()

    # The test guest, shared by every host (same path everywhere, so migration finds the kernel).
    build = subprocess.run([os.path.join(REPO, "guest", "build-test-guest"), testbed.guest_dir],
                           stdin=subprocess.DEVNULL, stdout=sys.stderr)
    if build.returncode != 0:
        raise TestbedError(f"guest/build-test-guest {testbed.guest_dir} failed (exit {build.returncode})")

    state.hosts = want
    state.agent_bin = agent
    state.save()
    setup_bridge(testbed.dir, state)
    hosts = [Host(testbed, n) for n in range(1, want + 1)]
    booting = []
    for host in hosts:
        if host.healthy():
            if agent:
                host.start_agent(agent, manager, join)
            else:
                host.stop_agent()
            continue
        host.start(agent, manager, join)
        booting.append(host)
        if not testbed.has_qemu_capabilities():
            wait_booted(host, boot_limit_s(testbed))  # its QEMU capabilities spare the other hosts the probe
    # The Ceph comes up while the hosts boot (its monitor binds the bridge's address).
    if ceph:
        ceph_cluster(testbed).up(CephSettings(BRIDGE_ADDR, ceph, CEPH_MON_PORT), replace=True)
    elif os.path.isdir(ceph_cluster(testbed).dir):
        ceph_cluster(testbed).down()
    for host in booting:
        wait_booted(host, boot_limit_s(testbed))
    write_description(testbed)
    log(f"up: {want} hosts in {(time.monotonic() - started) * 1000:.0f} ms; {testbed.dir}/testbed.json")
    return 0


def boot_limit_s(testbed):
    """How long a host may take to boot: host init, libvirtd and the agent each get the timeout
    (and the supply says which one ran out), plus a margin."""
    return 3 * testbed.timeout_s + 10


def cmd_down(args):
    require_root()
    testbed = testbed_from_env()
    if not os.path.isdir(testbed.dir):
        log(f"down: nothing to do ({testbed.dir} does not exist)")
        return 0
    bring_down(testbed)
    return 0


def bring_down(testbed):
    """Stops every host of TESTBED and undoes what its `up` changed on the machine."""
    testbed.lock()
    description, state_file = os.path.join(testbed.dir, "testbed.json"), testbed.state.path
    owner = bridge_owner()
    if owner and owner != testbed.dir:
        # The machine-wide names belong to another test bed: nothing here to stop.
        log(f"down: nothing to do for {testbed.dir} (the test bed that is up belongs to UW_TESTBED_DIR={owner})")
        remove(description, state_file)
        return
    state = testbed.state.load()
    # Hosts from the state file, plus any host an interrupted `up` left (a directory or a namespace).
    count = max([state.hosts] + testbed.host_numbers_on_disk() + host_numbers_in_namespaces())
    for n in range(1, count + 1):
        host = Host(testbed, n)
        if os.path.isdir(host.dir) or netns_exists(host.netns):
            host.stop()
    if os.path.isdir(ceph_cluster(testbed).dir):
        ceph_cluster(testbed).down()
    teardown_bridge(testbed.dir, state)
    cg_remove(CGROUP_NAME)
    if state.made_run_netns and os.path.isdir("/run/netns") and not os.listdir("/run/netns"):
        # ip netns mounts /run/netns on itself; a second entry may be stacked.
        run(["umount", "/run/netns"], check=False)
        run(["umount", "/run/netns"], check=False)
        try:
            os.rmdir("/run/netns")
        except OSError:
            pass
    remove(description, state_file, os.path.join(testbed.dir, "bmc.password"))
    log("down")


def host_numbers_in_namespaces():
    """N of every uw-hN network namespace on the machine."""
    names = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    return [int(m.group(1)) for m in (re.fullmatch(r"uw-h([0-9]+)", e) for e in names) if m]


def testbed_daemons_alive():
    """Whether any test bed daemon (libvirtd, an agent, a guest) still runs in a uw-hN namespace;
    the namespace holders (`sleep`) and the BMCs (`ipmi_sim`, `uw-bmc-serve`) do not count."""
    for n in host_numbers_in_namespaces():
        for pid in netns_pids(f"uw-h{n}"):
            if (read_text(f"/proc/{pid}/comm", "") or "").strip() not in ("", "sleep", BMC_COMM, SERVE_COMM):
                return True
    return False


def claim_machine(testbed):
    """The machine's names (the bridge, the uw-hN namespaces) hold one test bed at a time. Another
    test bed that is up is waited for while any of its daemons runs (a CI run and a developer's
    run on one machine take turns), for at most UW_TESTBED_WAIT_S seconds (default 2700); one
    whose daemons are all gone (its run was killed) is taken down first."""
    wait = os.environ.get("UW_TESTBED_WAIT_S") or "2700"
    try:
        wait_s = float(wait)
    except ValueError:
        raise TestbedError(f"UW_TESTBED_WAIT_S must be a number of seconds (got {wait})") from None
    started, said = time.monotonic(), False
    while True:
        owner = bridge_owner()
        if not owner or owner == testbed.dir:
            return
        if not testbed_daemons_alive():
            log(f"the test bed of UW_TESTBED_DIR={owner} has no daemon left (its run was killed): taking it down")
            bring_down(Testbed(owner, testbed.timeout_s))
            continue
        waited = time.monotonic() - started
        if waited >= wait_s:
            raise TestbedError(f"another test bed is up (UW_TESTBED_DIR={owner}) and stayed up for {waited:.0f} s; "
                               f"stop it first: UW_TESTBED_DIR={owner} {sys.argv[0]} down")
        if not said:
            log(f"waiting (up to {wait_s:.0f} s) for the test bed of UW_TESTBED_DIR={owner} to go down")
            said = True
        time.sleep(2)


def cmd_status(args):
    """One line per host; 0 when every daemon is up, 1 when one is down, 3 when the test bed is down."""
    testbed = testbed_from_env()
    state = testbed.state.load()
    if state.hosts == 0:
        print(f"test bed is down ({testbed.dir})")
        return 3
    row = "{:<4} {:<12} {:<8} {:<8} {:<5} {:<8} {:<8} {:<8} {:<10} {}"
    print(row.format("HOST", "ADDRESS", "BMC", "REDFISH", "POWER", "HOLDER", "VIRTLOGD", "LIBVIRTD", "LIBVIRT_API",
                     "AGENT"))
    everything_up = True
    for n in range(1, state.hosts + 1):
        host = Host(testbed, n)

        def pid_or_down(name, comm):
            pid = alive(host.file(name), comm)
            return "down" if pid is None else str(pid)

        bmc, redfish = pid_or_down("bmc.pid", BMC_COMM), pid_or_down("bmc-serve.pid", SERVE_COMM)
        power = "on" if is_on(host) else "off"
        holder, virtlogd, libvirtd = (pid_or_down("holder.pid", "sleep"), pid_or_down("virtlogd.pid", "virtlogd"),
                                      pid_or_down("libvirtd.pid", "libvirtd"))
        api = "ok" if power == "on" and host.libvirt_answers() else "down"
        agent = "none"
        if state.agent_bin:
            agent = f"ok(pid {read_text(host.file('agent.pid'), '')})" if host.agent_healthy() else "down"
        columns = (bmc, redfish, power, holder, virtlogd, libvirtd, api, agent)
        print(row.format(host.name, host.address, *columns), flush=True)
        everything_up = everything_up and "down" not in columns and power == "on"
    ceph = ceph_cluster(testbed)
    if os.path.isdir(ceph.dir):
        ceph_up, line = ceph.status()
        print(line, flush=True)
        everything_up = everything_up and ceph_up
    return 0 if everything_up else 1


def cmd_exec(args):
    """Replaces this process with CMD inside host hN's network, mount, UTS and cgroup namespaces
    (through the holder) and its /daemons cgroup; the exit status is CMD's."""
    if len(args) < 2:
        usage()
    host, command = host_named(args[0]), args[1:]
    holder = alive(host.file("holder.pid"), "sleep")
    if holder is None:
        off = bmc_alive(host) and not is_on(host)
        raise TestbedError(f"host {host.name} is {'off (its BMC can switch it on)' if off else 'not up'}")
    cg_join(f"{host.cgroup}/daemons", os.getpid())
    # Python ignores these; the command should not inherit that.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    os.execvp("nsenter", ["nsenter", "-t", str(holder), "-m", "-u", "-C", "-n", "--wd=/", "--"] + command)


def host_named(name):
    """Host NAME (hN) of the test bed in UW_TESTBED_DIR."""
    if not re.fullmatch(r"h[1-9][0-9]*", name) or int(name[1:]) > MAX_HOSTS:
        raise TestbedError(f"unknown host {name} (expected hN)")
    return Host(testbed_from_env(), int(name[1:]))


def cmd_crash(args):
    """`crash hN`: kills every process of host hN but its BMC and its power supply (a crashed OS on
    a machine that still has power). HA finds the host silent with its BMC saying on: isolated."""
    if len(args) != 1:
        usage()
    host = host_named(args[0])
    if not is_on(host):
        raise TestbedError(f"{host.name} is off: nothing to crash")
    supply = alive(host.file("power.pid"), SUPPLY_COMM)
    started = time.monotonic()
    host.kill_processes(signal.SIGKILL, keep_bmc=True, keep=set() if supply is None else {supply})
    log(f"{host.name}: crashed (everything but its BMC and power supply killed in "
        f"{(time.monotonic() - started) * 1000:.0f} ms)")
    return 0


def cmd_soft_off(args):
    """`soft-off hN`: host hN's OS shuts it down, as `chassis power soft` does (power.soft_off:
    SIGTERM to its power supply, which stops the daemons in order and exits), and returns at once.
    The agent runs it for POST /api/v1/host/shutdown (its shutdown_command, Host.shutdown_argv),
    from inside the host's namespaces: it needs only DIR and /proc, which are the machine's there."""
    if len(args) != 1:
        usage()
    host = host_named(args[0])
    if not is_on(host):
        log(f"{host.name} is off already")
        return 0
    log(f"{host.name}: soft off")
    soft_off(host)
    return 0


def cmd_power_run(args):
    """`power-run hN`: host hN's power supply (power.run_supply), started by power on."""
    if len(args) != 1:
        usage()
    return run_supply(host_named(args[0]))


def cmd_bmc_serve(args):
    """`bmc-serve hN`: the Redfish service and Wake-on-LAN listener of hN's BMC (bmcserve.py), in
    the host's network namespace (bmc.start_bmc_serve starts it there)."""
    if len(args) != 1:
        usage()
    from .bmcserve import run_bmc_serve  # only this process needs http.server and ssl
    return run_bmc_serve(host_named(args[0]))


def cmd_bmc_chassis(args):
    """`bmc-chassis hN get|set ...`: the chassis_control program of hN's BMC (bmc.chassis_control)."""
    if not args:
        usage()
    return chassis_control(host_named(args[0]), args[1:])


COMMANDS = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "exec": cmd_exec, "crash": cmd_crash,
            "soft-off": cmd_soft_off, "power-run": cmd_power_run,
            "bmc-chassis": cmd_bmc_chassis, "bmc-serve": cmd_bmc_serve}


def main(argv):
    """Runs the command line ARGV (without the program name); returns the exit status."""
    if not argv or argv[0] not in COMMANDS:
        usage()
    try:
        return COMMANDS[argv[0]](argv[1:])
    except (TestbedError, OSError) as e:
        print(f"testbed: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

