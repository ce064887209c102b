"""A host's power, as its BMC (bmc.py) switches it.

The host is on while its power supply runs: one process per host, `scripts/testbed power-run hN`
(run_supply), pid in DIR/hN/power.pid, that boots the host (Host.boot: host init with virtlogd and
libvirtd, then the agent) and then waits in the foreground. What the supply started may die (a
hung or crashed OS): the host stays on, as a real machine does. Power off (cut_power) kills
everything in the host's cgroups and network namespace at once, as pulling the plug would, and
leaves the BMC, the namespace and its address; soft off (SIGTERM to the supply) stops the daemons in
order first. DIR/hN/boot.state says how the last boot went: booting, up, or failed: WHY.
"""

import contextlib
import fcntl
import os
import signal
import time

from .cgroup import cg_remove, spawn_daemon
from .process import POLL_S, TestbedError, alive, log, read_text, remove, send_signal, write_text

TESTBED_PROGRAM = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               "testbed")
SUPPLY_COMM = "testbed"  # /proc/PID/comm of scripts/testbed power-run (a script has its own name)
# What a power off leaves no trace of: the daemons' pid files and the last boot's markers.
POWERED_FILES = ("power.pid", "holder.pid", "virtlogd.pid", "libvirtd.pid", "agent.pid", "agent.bin",
                 "init.done", "init.failed", "boot.state")


class SoftOff(Exception):
    """SIGTERM reached the power supply (`chassis power soft`): shut the host down in order."""


def is_on(host):
    """The host's power supply runs."""
    return alive(host.file("power.pid"), SUPPLY_COMM) is not None


def boot_state(host):
    return read_text(host.file("boot.state"), "")


@contextlib.contextmanager
def power_lock(host):
    """Serialises switching HOST's power (its BMC, `up`, `down`): DIR/hN/power.lock."""
    os.makedirs(host.dir, exist_ok=True)
    with open(host.file("power.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def supply_env(testbed):
    """The supply's environment: this test bed's directory and timeout, whoever switches it on."""
    return dict(os.environ, UW_TESTBED_DIR=testbed.dir, UW_TESTBED_TIMEOUT=f"{testbed.timeout_s:g}")


def power_on(host):
    """Starts HOST's power supply in the host's /daemons cgroup unless it runs, and returns at once
    (wait_booted waits for the boot). What a supply killed by hand left running is killed first, so
    every boot starts clean. False when the host was already on. The supply needs no namespace of
    the host (it enters them through nsenter): it stays in the one of whoever switched it on, so
    that its pid file names `testbed` from the moment it exists."""
    with power_lock(host):
        if is_on(host):
            return False
        host.kill_processes(signal.SIGKILL, keep_bmc=True)
        remove(*(host.file(f) for f in POWERED_FILES))
        write_text(host.file("boot.state"), "booting\n")
        supply = spawn_daemon([TESTBED_PROGRAM, "power-run", host.name], host.file("power.log"), append=True,
                              cgroup=f"{host.cgroup}/daemons", env=supply_env(host.testbed))
        write_text(host.file("power.pid"), f"{supply.pid}\n")
        return True


def cut_power(host):
    """Powers HOST off at once: SIGKILL to everything in its cgroups and network namespace but its
    BMC, until nothing is left; removes its cgroups and the daemons' pid files. Nothing to do when
    it is off."""
    with power_lock(host):
        host.kill_processes(signal.SIGKILL, keep_bmc=True)
        cg_remove(host.cgroup)
        remove(*(host.file(f) for f in POWERED_FILES))


def soft_off(host):
    """Asks HOST's supply to shut the host down in order (SIGTERM) and returns at once: the host
    is on until the daemons stopped, as a machine is while its OS shuts down."""
    pid = alive(host.file("power.pid"), SUPPLY_COMM)
    if pid is not None:
        send_signal([pid], signal.SIGTERM)


def wait_booted(host, limit_s):
    """Waits up to LIMIT_S seconds for HOST's supply to finish booting it. TestbedError when the
    boot failed, the host went off meanwhile, or time ran out."""
    deadline = time.monotonic() + limit_s
    while True:
        state = boot_state(host)
        if state == "up":
            return
        if state.startswith("failed: "):
            raise TestbedError(f"{state[len('failed: '):]}; the power supply's log: {host.file('power.log')}")
        if not is_on(host):
            raise TestbedError(f"{host.name} went off while booting; see {host.file('power.log')}")
        if time.monotonic() >= deadline:
            raise TestbedError(f"{host.name} did not boot within {limit_s:g}s; see {host.file('power.log')}")
        time.sleep(POLL_S)


def reap_children():
    """Collects every child of this process that has exited."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_supply(host):
    """`scripts/testbed power-run hN`: HOST's power supply. Boots the host and stays in the
    foreground while it is on. A boot that fails leaves the host on (a machine whose OS does not
    come up still has power), the reason in boot.state. SIGTERM or SIGINT (soft off) stops the
    host's daemons in order, kills what is left but the BMC, and exits: the host is off."""
    def soft(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise SoftOff()

    signal.signal(signal.SIGTERM, soft)
    signal.signal(signal.SIGINT, soft)
    started = time.monotonic()
    try:
        log(f"{host.name}: power on")
        try:
            host.boot()
            write_text(host.file("boot.state"), "up\n")
            log(f"{host.name}: up in {(time.monotonic() - started) * 1000:.0f} ms")
        except (TestbedError, OSError) as e:
            write_text(host.file("boot.state"), f"failed: {e}\n")
            log(f"{host.name}: boot failed: {e}")
        # What the supply started is its children: a daemon that dies (or that a test kills) is
        # reaped here, or it would stay a zombie that `kill -0` still finds.
        while True:
            reap_children()
            time.sleep(POLL_S)
    except SoftOff:
        log(f"{host.name}: soft power off")
        host.shut_down()
        host.kill_processes(signal.SIGKILL, keep_bmc=True)
        cg_remove(host.cgroup)  # all but the supply's own /daemons
        remove(*(host.file(f) for f in POWERED_FILES))
        log(f"{host.name}: off")
    return 0
