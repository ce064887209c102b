"""The state directory (UW_TESTBED_DIR): DIR/state, the lock, the QEMU capabilities cache."""

import fcntl
import os
import re
import shlex

from .process import TestbedError, copy_as_is, read_text, remove, write_text


class State:
    """DIR/state: how many hosts `up` started, with which agent, and what it changed on the machine
    (so that `down` undoes exactly that). KEY=VALUE lines in shell syntax, as the bash version of
    this program wrote (and sourced) them: either version can bring down a test bed the other
    started. Read without evaluating anything."""

    INTS = ("hosts", "made_run_netns", "iptables_rules")

    def __init__(self, path):
        self.path = path
        self.hosts = 0
        self.agent_bin = ""
        self.made_run_netns = 0
        self.iptables_rules = 0

    def load(self):
        text = read_text(self.path)
        if text is None:
            return self
        try:
            for word in shlex.split(text, comments=True):
                key, _, value = word.partition("=")
                if key in self.INTS:
                    setattr(self, key, int(value or 0))
                elif key == "agent_bin":
                    self.agent_bin = value
        except ValueError as e:
            raise TestbedError(f"cannot read {self.path} ({e}); remove it after checking nothing is up") from None
        return self

    def save(self):
        write_text(self.path, "".join(f"{k}={shlex.quote(str(getattr(self, k)))}\n"
                                      for k in ("hosts", "agent_bin", "made_run_netns", "iptables_rules")))


class Testbed:
    """The test bed whose state lives in DIR; TIMEOUT_S bounds each wait for a daemon."""

    def __init__(self, testbed_dir, timeout_s):
        self.dir = testbed_dir
        self.timeout_s = timeout_s
        self.guest_dir = os.path.join(testbed_dir, "guest")
        self.state = State(os.path.join(testbed_dir, "state"))
        self.lock_file = None

    def lock(self):
        """Serialises `up`/`down` on this directory (DIR/.lock, held until the program exits; the
        descriptor is close-on-exec, so the daemons do not hold it)."""
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.lock_file = open(os.path.join(self.dir, ".lock"), "w")
        fcntl.flock(self.lock_file, fcntl.LOCK_EX)

    def has_qemu_capabilities(self):
        return os.path.isdir(os.path.join(self.dir, "qemu-capabilities"))

    def keep_qemu_capabilities(self, probed):
        """Saves the first host's QEMU capabilities cache as DIR/qemu-capabilities for later hosts:
        libvirtd otherwise spends ~4 s per emulator binary probing before it answers."""
        saved = os.path.join(self.dir, "qemu-capabilities")
        if os.path.isdir(probed) and not os.path.isdir(saved):
            remove(saved + ".tmp")
            copy_as_is(probed, saved + ".tmp")
            os.rename(saved + ".tmp", saved)

    def host_numbers_on_disk(self):
        """N of every DIR/hN directory (hosts an interrupted `up` may have left)."""
        return [int(m.group(1)) for m in (re.fullmatch(r"h([0-9]+)", e) for e in os.listdir(self.dir))
                if m and os.path.isdir(os.path.join(self.dir, m.group(0)))]
