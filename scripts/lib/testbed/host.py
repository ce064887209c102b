"""One host of the test bed: its namespace, private directories, daemons, agent and BMC."""

import json
import os
import re
import secrets
import signal
import subprocess
import time
import uuid

from .bmc import (REDFISH_CERT, REDFISH_KEY, bmc_alive, bmc_description, redfish_description, start_bmc, stop_bmc,
                  wol_description)
from .cgroup import CGROUP_NAME, cg_mkdir, cg_pids, cg_remove, cgroup_hierarchies, cgroup_mountpoints, spawn_daemon
from .network import BRIDGE, SUBNET, link_exists, netns_exists, netns_pids
from .power import SUPPLY_COMM, TESTBED_PROGRAM, boot_state, is_on, power_lock, power_on
from .process import (POLL_S, TestbedError, alive, comm_of, copy_as_is, have, log, read_pid, read_text, remove, run,
                      send_signal, stop_pidfile, succeeds, wait_until, write_text)

AGENT_PORT = 7700
# Each host runs its own Open vSwitch when it is installed (testbed-host-init).
OVS_VSWITCHD = "/usr/sbin/ovs-vswitchd"
HOST_INIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "testbed-host-init")
# libvirt's directories each host gets a private copy of (bound over the system path by host init);
# DIR/hN/<name> where the name is the path with its slashes as dashes.
PRIVATE_DIRS = ("etc/libvirt", "var/lib/libvirt", "var/cache/libvirt", "var/log/libvirt")


class Host:
    """Host hN of the test bed: namespace uw-hN, address 10.77.0.N, files in DIR/hN. Its daemons are
    known by their pid files there (holder.pid, virtlogd.pid, libvirtd.pid, agent.pid; power.pid
    is its power supply, bmc.pid its BMC)."""

    def __init__(self, testbed, n):
        self.testbed = testbed
        self.n = n
        self.name = f"h{n}"
        self.netns = f"uw-h{n}"
        self.veth = f"uwv-h{n}"
        self.address = f"{SUBNET}.{n}"
        self.dir = os.path.join(testbed.dir, self.name)
        self.libvirt_uri = f"qemu+tcp://{self.address}/system"
        self.lxc_uri = f"lxc+tcp://{self.address}/system"
        self.agent_url = f"http://{self.address}:{AGENT_PORT}"
        self.cgroup = f"{CGROUP_NAME}/{self.name}"
        self.bmc_cgroup = f"{CGROUP_NAME}/{self.name}-bmc"  # beside the host's: power off spares it

    def file(self, name):
        return os.path.join(self.dir, name)

    def uuid(self):
        return f"75770000-0000-4000-8000-{self.n:012d}"  # fixed per host number

    # -- health

    def libvirt_answers(self, timeout_s=10):
        return succeeds(["virsh", "-c", self.libvirt_uri, "version"], timeout=timeout_s)

    def healthy(self):
        """The BMC runs, the host is on and booted, namespace holder, virtlogd and libvirtd run,
        libvirtd answers, the veth is on the bridge."""
        return (bmc_alive(self)
                and is_on(self)
                and boot_state(self) == "up"
                and alive(self.file("holder.pid"), "sleep") is not None
                and alive(self.file("virtlogd.pid"), "virtlogd") is not None
                and alive(self.file("libvirtd.pid"), "libvirtd") is not None
                and self.libvirt_answers()
                and self.veth_master() == BRIDGE)

    def mac(self):
        """The MAC address (aa:bb:cc:dd:ee:ff) of the host's eth0, the veth end in its namespace:
        what a Wake-on-LAN magic packet for this host names."""
        listed = run(["ip", "-n", self.netns, "-j", "link", "show", "dev", "eth0"], stdout=subprocess.PIPE)
        try:
            return json.loads(listed.stdout)[0]["address"]
        except (ValueError, LookupError, TypeError):
            raise TestbedError(f"no MAC address for eth0 in {self.netns}: {listed.stdout.strip()}") from None

    def veth_master(self):
        try:
            return os.path.basename(os.readlink(f"/sys/class/net/{self.veth}/master"))
        except OSError:
            return ""

    def agent_healthy(self):
        """GET /healthz answers 2xx within 5 s (no proxy: the address is on the bridge)."""
        # Imported here: the BMC runs this program for every `power status`, which needs no HTTP.
        import urllib.error
        import urllib.request
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{self.agent_url}/healthz", timeout=5) as reply:
                return 200 <= reply.status < 300
        except (OSError, urllib.error.URLError, ValueError):
            return False

    # -- network

    def setup_netns(self):
        """Namespace uw-hN with eth0 (a veth to the bridge) at 10.77.0.N/24, lo up."""
        if not os.path.isdir("/run/netns"):
            self.testbed.state.made_run_netns = 1  # `ip netns add` creates and mounts it
            self.testbed.state.save()
        if not netns_exists(self.netns):
            run(["ip", "netns", "add", self.netns])
        if not link_exists(self.veth):
            run(["ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns])
        run(["ip", "link", "set", self.veth, "master", BRIDGE, "up"])
        run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        run(["ip", "-n", self.netns, "addr", "replace", f"{self.address}/24", "dev", "eth0"])
        run(["ip", "-n", self.netns, "link", "set", "eth0", "up"])
        # veth TX checksum offload makes TCP between namespaces fail silently on some kernels.
        if have("ethtool"):
            run(["ethtool", "-K", self.veth, "tx", "off"], check=False)
            run(["ip", "netns", "exec", self.netns, "ethtool", "-K", "eth0", "tx", "off"], check=False)
        else:
            log("warning: ethtool missing (scripts/install-deps): TX checksum offload stays on")

    def teardown_netns(self):
        run(["ip", "link", "del", self.veth], check=False)
        if netns_exists(self.netns):
            run(["ip", "netns", "del", self.netns])

    # -- files

    def private_dir(self, system_path):
        """DIR/hN/var-lib-libvirt for var/lib/libvirt."""
        return self.file(system_path.replace("/", "-"))

    def prepare_dirs(self):
        """Private /run, /etc/libvirt (a configured copy), /var/lib/libvirt, /var/cache/libvirt and
        /var/log/libvirt for this host, replacing what an earlier run left."""
        remove(self.file("run"), *(self.private_dir(d) for d in PRIVATE_DIRS))
        self.remove_pid_files()
        remove(self.file("init.done"), self.file("init.failed"))
        os.makedirs(self.file("run"), exist_ok=True)
        os.chmod(self.dir, 0o755)
        os.chmod(self.file("run"), 0o755)
        self.write_libvirt_config()
        # QEMU capabilities probed by an earlier host: libvirtd otherwise spends ~4 s per emulator
        # binary probing before it answers. libvirt re-probes by itself when the cache no longer matches.
        cache = os.path.join(self.testbed.dir, "qemu-capabilities")
        if os.path.isdir(cache):
            os.makedirs(os.path.join(self.private_dir("var/cache/libvirt"), "qemu"), exist_ok=True)
            copy_as_is(cache, os.path.join(self.private_dir("var/cache/libvirt"), "qemu", "capabilities"))
        # Same top-level layout (owners and modes) as the system directories, without their contents.
        for d in PRIVATE_DIRS[1:]:
            mine = self.private_dir(d)
            os.makedirs(mine, exist_ok=True)
            os.chmod(mine, 0o755)
            system = "/" + d
            if not os.path.isdir(system):
                continue
            for entry in sorted(os.listdir(system)):
                src = os.path.join(system, entry)
                if entry.startswith(".") or not os.path.isdir(src):
                    continue
                dst = os.path.join(mine, entry)
                os.makedirs(dst, exist_ok=True)
                st = os.stat(src)
                os.chown(dst, st.st_uid, st.st_gid)
                os.chmod(dst, st.st_mode & 0o7777)

    def write_libvirt_config(self):
        """DIR/hN/etc-libvirt: the system's daemon configuration without its definitions (domains,
        networks, pools, secrets): each host starts empty, and no NAT network is autostarted (it needs
        dnsmasq and iptables). Then this host's settings."""
        etc = self.private_dir("etc/libvirt")
        os.makedirs(etc, exist_ok=True)
        if os.path.isdir("/etc/libvirt"):
            confs = sorted(os.path.join("/etc/libvirt", f) for f in os.listdir("/etc/libvirt")
                           if f.endswith(".conf") and not f.startswith("."))
            if confs:
                run(["cp", "-a", "--"] + confs + [etc + "/"], check=False)
            if os.path.isdir("/etc/libvirt/nwfilter"):
                copy_as_is("/etc/libvirt/nwfilter", etc + "/")
        # libvirtd.conf and qemu.conf ship with libvirt-daemon-system, which the test bed does not
        # need (it pulls in systemd units and a NAT network): without them the daemons run on their
        # defaults. libvirt takes the first occurrence of a key: the system's own values for the keys
        # set here are dropped.
        self.append_settings(os.path.join(etc, "libvirtd.conf"), [
            ("listen_tls", "0"),
            ("listen_tcp", "1"),
            ("listen_addr", f'"{self.address}"'),
            ("auth_tcp", '"none"'),
            ("host_uuid", f'"{self.uuid()}"'),
            ("log_outputs", '"3:file:/var/log/libvirt/libvirtd.log"'),
        ])
        self.append_settings(os.path.join(etc, "qemu.conf"), [
            ("migration_address", f'"{self.address}"'),
            ("migration_host", f'"{self.address}"'),
            ("remember_owner", "0"),
            # QEMU runs as root: Debian's built-in default is the libvirt-qemu user, which only
            # libvirt-daemon-system creates.
            ("user", '"root"'),
            ("group", '"root"'),
        ])

    def append_settings(self, path, settings):
        """Drops PATH's lines that set one of SETTINGS' keys, then appends SETTINGS (KEY = VALUE)."""
        setting_line = re.compile(r"^\s*(" + "|".join(k for k, _ in settings) + r")\s*=")
        try:
            with open(path, encoding="utf-8") as f:
                kept = [line for line in f if not setting_line.match(line)]
        except FileNotFoundError:
            kept = []
        block = [f"\n# --- Underware test bed host {self.name} ---\n"] + [f"{k} = {v}\n" for k, v in settings]
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(kept + block))

    # -- daemons

    def start(self, agent, manager_url, join_token):
        """(Re)builds this host from scratch and switches it on: namespace, private directories, the
        agent's configuration when AGENT (a binary) is given, the BMC, then power on: the host's
        power supply (power.py) boots it. Returns at once; power.wait_booted waits for the boot."""
        log(f"starting {self.name} ({self.address})")
        self.stop(quiet=True)
        os.makedirs(self.dir, exist_ok=True)
        # A new host has an empty disk: its agent's state (local disks, image copies, samples) and
        # its Open vSwitch database from an earlier test bed in this directory would otherwise meet the next run's guests (a local
        # disk left by a test that stopped half-way refuses a guest of the same name).
        remove(self.file("agent-state"), self.file("ovs"))
        self.setup_netns()
        self.prepare_dirs()
        if agent:
            self.write_agent_config(manager_url, join_token)
        else:
            self.stop_agent()
        start_bmc(self)
        power_on(self)

    def boot(self):
        """What the power supply runs at power on: host init under nsenter + unshare, which starts
        virtlogd and libvirtd and becomes the namespace holder, then the agent when the test bed has
        one (DIR/state's agent binary, the existing agent.json: same token and manager as before).
        The host's disk (its libvirt directories, agent state) is kept; /run starts empty."""
        timeout_s = self.testbed.timeout_s
        remove(self.file("run"), self.file("init.done"), self.file("init.failed"),
               *(self.file(f) for f in ("holder.pid", "virtlogd.pid", "libvirtd.pid", "agent.pid", "agent.bin",
                                        "ovsdb-server.pid", "ovs-vswitchd.pid")))
        os.makedirs(self.file("run"))
        os.chmod(self.file("run"), 0o755)
        cgroups_file = self.file("cgroups")
        write_text(cgroups_file, "".join(f"{mp} {fstype} {opts}\n" for mp, fstype, opts in cgroup_hierarchies()))
        for mp in cgroup_mountpoints():
            cg_mkdir(mp, f"{self.cgroup}/daemons")
        # Joining the host's cgroup before unshare -C roots the new cgroup namespace there.
        init = spawn_daemon(["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "-m", "-u", "-C",
                             "--propagation", "private", HOST_INIT, self.name, self.dir, cgroups_file],
                            self.file("init.log"), append=False, cgroup=self.cgroup)
        deadline = time.monotonic() + timeout_s
        while not os.path.exists(self.file("init.done")):
            if os.path.exists(self.file("init.failed")) or init.poll() is not None:
                why = read_text(self.file("init.failed"), "init exited")
                raise TestbedError(f"{self.name} failed to start: {why} (log: {self.file('init.log')})")
            if time.monotonic() >= deadline:
                raise TestbedError(f"{self.name}: init did not finish within {timeout_s:g}s "
                                   f"(log: {self.file('init.log')})")
            time.sleep(POLL_S)
        if not wait_until(timeout_s, f"libvirtd on {self.name} ({self.libvirt_uri})", self.libvirt_answers):
            raise TestbedError(f"libvirtd on {self.name} does not answer; see "
                               f"{self.private_dir('var/log/libvirt')}/libvirtd.log and {self.file('init.log')}")
        self.testbed.keep_qemu_capabilities(os.path.join(self.private_dir("var/cache/libvirt"), "qemu", "capabilities"))
        agent = self.testbed.state.load().agent_bin
        if agent and os.path.isfile(self.file("agent.json")):
            self.launch_agent(agent)

    def shut_down(self):
        """Stops the host's daemons in order, as its OS would: the agent, the guests (destroyed
        through libvirt), libvirtd, virtlogd, the namespace holder."""
        self.stop_agent_process()
        # Guests first, while libvirtd can still shut them down cleanly.
        if alive(self.file("libvirtd.pid"), "libvirtd") is not None:
            for uri in (self.libvirt_uri, self.lxc_uri):
                listed = run(["virsh", "-c", uri, "list", "--name"], check=False, timeout=20, stdout=subprocess.PIPE)
                for domain in (listed.stdout.split() if listed and listed.returncode == 0 else []):
                    run(["virsh", "-c", uri, "destroy", domain], check=False, timeout=20)
        stop_pidfile(self.file("libvirtd.pid"), "libvirtd", 15)
        self.stop_ovs()
        stop_pidfile(self.file("virtlogd.pid"), "virtlogd")
        stop_pidfile(self.file("holder.pid"), "sleep", 5)

    def ovs_socket(self, name):
        """Path from the root namespace of socket NAME in the host's private /run/openvswitch."""
        return os.path.join(self.file("run"), "openvswitch", name)

    def stop_ovs(self):
        """Stops the host's Open vSwitch (testbed-host-init starts it): ovs-vswitchd through its
        `exit --cleanup` (a plain SIGTERM leaves its devices behind), then ovsdb-server."""
        if alive(self.file("ovs-vswitchd.pid"), "ovs-vswitchd") is not None:
            run(["ovs-appctl", "-t", self.ovs_socket("ovs-vswitchd.ctl"), "exit", "--cleanup"], check=False,
                timeout=10)
        stop_pidfile(self.file("ovs-vswitchd.pid"), "ovs-vswitchd")
        stop_pidfile(self.file("ovsdb-server.pid"), "ovsdb-server")

    def kill_processes(self, sig, keep_bmc, keep=frozenset()):
        """Kills whatever runs in the host's cgroups or network namespace (QEMU, libvirt_lxc,
        helpers, the power supply; with KEEP_BMC not the BMC's cgroup, never the pids in KEEP nor
        this process): SIG, SIGKILL from the 10th round, until nothing is left (at most 20 rounds)."""
        pause_s = 0.05 if sig == signal.SIGKILL else 0.2
        for attempt in range(1, 21):
            pids = cg_pids(self.cgroup) | netns_pids(self.netns)
            pids = (pids - cg_pids(self.bmc_cgroup)) if keep_bmc else (pids | cg_pids(self.bmc_cgroup))
            pids.discard(os.getpid())
            pids -= set(keep)
            if not pids:
                return
            send_signal(sorted(pids), sig if attempt < 10 else signal.SIGKILL)
            time.sleep(pause_s)

    def stop(self, quiet=False):
        """Stops everything of this host, its BMC and guests included, and removes its namespace and
        cgroups. Kills only processes we started (pid files) or that live in the host's own cgroups
        or network namespace. Logs stay."""
        if not quiet:
            log(f"stopping {self.name}")
        stop_bmc(self)  # first: nothing switches the host on again while it goes
        with power_lock(self):
            supply = alive(self.file("power.pid"), SUPPLY_COMM)
            if supply is not None:
                send_signal([supply], signal.SIGKILL)  # its soft off would race the stop below
            self.shut_down()
            self.stop_agent()
            self.kill_processes(signal.SIGTERM, keep_bmc=False)
            cg_remove(self.cgroup)
            cg_remove(self.bmc_cgroup)
            self.teardown_netns()
            remove(self.file("run"), *(self.private_dir(d) for d in PRIVATE_DIRS[:3]))
            remove(self.file("init.done"), self.file("init.failed"), self.file("boot.state"),
                   *(self.file(os.path.join("bmc", f))
                     for f in ("lan.conf", "bmc.emu", "state", REDFISH_CERT, REDFISH_KEY)))
            self.remove_pid_files()
            remove(self.file("power.lock"))  # held until the end of this block; nothing else waits for it now

    def remove_pid_files(self):
        if os.path.isdir(self.dir):
            remove(*(self.file(f) for f in os.listdir(self.dir) if f.endswith(".pid")))

    # -- agent

    def start_agent(self, binary, manager_url, join_token):
        """Runs BINARY as this host's agent with a new configuration unless the same binary already
        runs and answers for the same manager; waits for /healthz. The host must be on."""
        if (alive(self.file("agent.pid"), comm_of(binary)) is not None
                and read_text(self.file("agent.bin")) == binary
                and read_text(self.file("agent.manager"), "") == manager_url
                and self.agent_healthy()):
            return
        self.stop_agent()
        self.write_agent_config(manager_url, join_token)
        self.launch_agent(binary)

    def launch_agent(self, binary):
        """Starts BINARY --config DIR/hN/agent.json in the holder's namespaces and /daemons cgroup
        (pid in agent.pid) and waits for /healthz."""
        timeout_s = self.testbed.timeout_s
        holder = read_pid(self.file("holder.pid"))
        if holder is None:
            raise TestbedError(f"{self.name} has no namespace holder ({self.file('holder.pid')})")
        write_text(self.file("agent.bin"), binary + "\n")
        log(f"starting agent on {self.name}")
        agent = spawn_daemon(["nsenter", "-t", str(holder), "-m", "-u", "-C", "-n", "--",
                              binary, "--config", self.file("agent.json")],
                             self.file("agent.log"), append=True, cgroup=f"{self.cgroup}/daemons")
        write_text(self.file("agent.pid"), f"{agent.pid}\n")
        deadline = time.monotonic() + timeout_s
        while not self.agent_healthy():
            if agent.poll() is not None or alive(self.file("agent.pid")) is None:
                raise TestbedError(f"uw-agent on {self.name} exited; see {self.file('agent.log')}")
            if time.monotonic() >= deadline:
                raise TestbedError(f"uw-agent on {self.name} does not answer {self.agent_url}/healthz after "
                                   f"{timeout_s:g}s; see {self.file('agent.log')}")
            time.sleep(POLL_S)

    def stop_agent_process(self):
        binary = read_text(self.file("agent.bin"), "")
        if binary:
            stop_pidfile(self.file("agent.pid"), comm_of(binary), 15)
        remove(self.file("agent.pid"), self.file("agent.bin"))

    def stop_agent(self):
        """Stops the agent and forgets its configuration's token and manager."""
        self.stop_agent_process()
        remove(*(self.file(f) for f in ("agent.token", "agent.manager")))

    def write_agent_config(self, manager_url, join_token):
        """DIR/hN/agent.json with a new random token (also in agent.token for testbed.json). Its
        shutdown_command (what the agent runs for POST /api/v1/host/shutdown, the wol power
        driver's off) is `scripts/testbed soft-off hN` with this test bed's directory: the host's
        own OS powering it off, as `chassis power soft` does (shutdown_argv)."""
        token = secrets.token_hex(24)
        os.makedirs(self.file("agent-state"), exist_ok=True)
        config = {
            "host_name": self.name,
            "listen": {"address": self.address, "port": AGENT_PORT},
            "token": token,
            "libvirt_uri": "qemu:///system",
            "lxc_uri": "lxc:///system",
            "state_dir": self.file("agent-state"),
            "guest_assets": self.testbed.guest_dir,
            "allow_emulated_kvm": True,
            "log_level": "info",
            "shutdown_command": self.shutdown_argv(),
            "ceph": self.ceph_config(),
        }
        if os.path.exists(OVS_VSWITCHD):
            # The host's own Open vSwitch (testbed-host-init), at the default socket of its /run.
            config["network"] = {"ovsdb": "unix:/run/openvswitch/db.sock", "bridge": "uw-int"}
        if manager_url:
            config.update(manager_url=manager_url, join_token=join_token, heartbeat_interval_ms=1000)
        write_text(self.file("agent.json"), json.dumps(config) + "\n")
        write_text(self.file("agent.manager"), manager_url + "\n")
        write_text(self.file("agent.token"), token + "\n")

    def ceph_config(self):
        """The agent's `ceph`: the test bed's Ceph (up --ceph) at its fixed paths under DIR/ceph, the
        same on every host; the agent reads the keyring only when a guest has an rbd disk, so this
        also stands when the test bed runs no Ceph (such a guest then gets a clear error). The
        secret's UUID is derived from DIR, so every host names the same libvirt secret."""
        ceph_dir = os.path.join(self.testbed.dir, "ceph")
        return {
            "conf": os.path.join(ceph_dir, "ceph.conf"),
            "user": "uw",
            "keyring": os.path.join(ceph_dir, "client.uw.keyring"),
            "secret_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, "underware-testbed-ceph:" + self.testbed.dir)),
        }

    def shutdown_argv(self):
        """The agent's shutdown_command: `env UW_TESTBED_DIR=DIR scripts/testbed soft-off hN`. The
        agent runs it inside the host's network, mount, UTS and cgroup namespaces (it was started
        through the holder), but in the machine's pid namespace: /proc shows the power supply, and
        DIR and scripts/ have the same paths there, so soft-off signals the supply directly. The
        directory is in the command, not left to the agent's environment, so an agent started by
        hand with this agent.json still switches off this test bed's host."""
        return ["/usr/bin/env", f"UW_TESTBED_DIR={self.testbed.dir}", TESTBED_PROGRAM, "soft-off", self.name]

    def description(self, with_agent):
        """This host's entry in testbed.json."""
        token = read_text(self.file("agent.token"), "")
        return {
            "name": self.name,
            "netns": self.netns,
            "address": self.address,
            "libvirt_uri": self.libvirt_uri,
            "lxc_uri": self.lxc_uri,
            "agent_url": self.agent_url if with_agent else None,
            "agent_token": token if token and with_agent else None,
            "dir": self.dir,
            "ovsdb": self.ovs_socket("db.sock") if os.path.exists(OVS_VSWITCHD) else None,
            "bmc": bmc_description(self),
            "redfish": redfish_description(self),
            "wol": wol_description(self),
        }
