"""The namespace test bed behind scripts/testbed (docs/testbed.md): N "hosts" on one machine, each a
network namespace with its own libvirtd (and uw-agent when given) and a BMC, joined by a bridge.

How it works: `up` makes the bridge (network.py), then per host (host.py) a network namespace with
a veth to the bridge and private copies of libvirt's directories, starts the host's BMC (bmc.py:
ipmi_sim; bmcserve.py: Redfish and Wake-on-LAN) and switches the host on (power.py): its power
supply, a `scripts/testbed power-run` process, starts scripts/lib/testbed-host-init under nsenter +
unshare in the host's cgroup (cgroup.py). That script is the one piece left in bash: it mounts the
host's private view, starts virtlogd and libvirtd, and becomes the namespace holder. Agents are
started inside the holder's namespaces. The BMC's chassis commands (and Redfish resets, magic
packets) switch the host off (everything in its cgroups and namespace is killed) and on (a new
power supply boots it). Everything `up` starts is recorded in
DIR (pid files, DIR/state: statedir.py) so `down` can stop it, and DIR/testbed.json, written last,
tells integration tests what is up (cli.py). Python 3 standard library only (Debian 12's python3);
every command runs with an explicit argument list, no shell.
"""
