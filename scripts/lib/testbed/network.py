"""The bridge every host's veth is attached to, and network namespaces. Bridge and namespace names
are machine-wide: one test bed per machine, owned by the state directory in the bridge's alias."""

import os

from .process import have, read_text, run, succeeds

BRIDGE = "uwbr0"
SUBNET = "10.77.0"  # host hN is SUBNET.N
BRIDGE_ADDR = f"{SUBNET}.254"

IPTABLES_RULES = (
    ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-m", "comment", "--comment", "uw-testbed", "-j", "ACCEPT"],
    ["INPUT", "-i", BRIDGE, "-m", "comment", "--comment", "uw-testbed", "-j", "ACCEPT"],
)


def link_exists(name):
    return succeeds(["ip", "link", "show", name])


def bridge_owner():
    """The state directory that owns the test bed, from the bridge's alias (`uw-testbed:DIR`), or
    "" when there is no bridge (or it is not ours)."""
    alias = read_text(f"/sys/class/net/{BRIDGE}/ifalias", "")
    return alias[len("uw-testbed:"):] if alias.startswith("uw-testbed:") else ""


def netns_exists(netns):
    """`ip netns list` shows it (a file in /run/netns)."""
    return os.path.exists(os.path.join("/run/netns", netns))


def netns_pids(netns):
    """Pids of the processes in network namespace NETNS (`ip netns pids`)."""
    try:
        ns = os.stat(os.path.join("/run/netns", netns))
    except OSError:
        return set()
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (ns.st_dev, ns.st_ino):
            pids.add(int(entry))
    return pids


def setup_bridge(testbed_dir, state):
    """The bridge (owned by TESTBED_DIR through its alias) and, when iptables works, ACCEPT rules for
    it (recorded in STATE): with br_netfilter loaded, bridged and local traffic crosses iptables,
    and a DROP policy (docker, firewalls on CI machines) would cut the hosts off."""
    if not link_exists(BRIDGE):
        run(["ip", "link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
        run(["ip", "link", "set", BRIDGE, "alias", f"uw-testbed:{testbed_dir}"])
        run(["ip", "addr", "add", f"{BRIDGE_ADDR}/24", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    if state.iptables_rules == 0 and have("iptables") and succeeds(["iptables", "-S"]):
        if all(succeeds(["iptables", "-I", rule[0], "1"] + rule[1:]) for rule in IPTABLES_RULES):
            state.iptables_rules = 1
            state.save()


def teardown_bridge(testbed_dir, state):
    """Deletes the iptables rules STATE says `up` added, and the bridge if TESTBED_DIR owns it."""
    if state.iptables_rules == 1 and have("iptables"):
        for rule in IPTABLES_RULES:
            while succeeds(["iptables", "-D"] + rule):
                pass
    state.iptables_rules = 0
    if bridge_owner() == testbed_dir:
        run(["ip", "link", "del", BRIDGE])
