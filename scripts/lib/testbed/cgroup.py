"""cgroups: each host lives in CGROUP_NAME/hN in every hierarchy (the root of its cgroup namespace),
its daemons in CGROUP_NAME/hN/daemons."""

import os
import subprocess

from .process import TestbedError, read_text

CGROUP_NAME = "uw-testbed"


def cgroup_mounts():
    """(mountpoint, fstype, options) of each cgroup hierarchy mounted under /sys/fs/cgroup in this
    mount namespace, options without rw/ro/release_agent."""
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            dash = fields.index("-", 6)
            mountpoint, fstype, superopts = fields[4], fields[dash + 1], fields[dash + 3]
            if fstype not in ("cgroup", "cgroup2") or not mountpoint.startswith("/sys/fs/cgroup"):
                continue
            opts = [o for o in superopts.split(",") if o not in ("rw", "ro") and not o.startswith("release_agent=")]
            mounts.append((mountpoint, fstype, ",".join(opts) or "defaults"))
    return mounts


def cgroup_hierarchies():
    """The hierarchies a host mounts: on the hybrid layout (v1 controllers plus
    /sys/fs/cgroup/unified) only the v1 ones, since libvirt's LXC driver fails on the v2 one."""
    mounts = cgroup_mounts()
    if not mounts:
        raise TestbedError("no cgroup hierarchies mounted under /sys/fs/cgroup")
    v1 = [m for m in mounts if m[1] == "cgroup"]
    return v1 or mounts


def cgroup_mountpoints():
    """Every cgroup mount point in the root namespace (a v2 unified one on hybrid layouts too)."""
    return [m[0] for m in cgroup_mounts()]


def cg_mkdir(mountpoint, rel):
    """Creates MOUNTPOINT/REL and its parents. cpuset (v1) children start empty, so they get the
    parent's cpus and mems. On cgroup v2 the root and uw-testbed/ delegate their controllers to
    children; a host's own cgroup (its cgroup namespace's root) holds no process once init moved
    into daemons/, so libvirtd enables controllers there itself for its /machine tree."""
    path = mountpoint
    for part in rel.split("/"):
        parent, path = path, os.path.join(path, part)
        if not os.path.isdir(path):
            if parent in (mountpoint, os.path.join(mountpoint, CGROUP_NAME)):
                delegate_controllers(parent)
            os.mkdir(path)
        cpus = os.path.join(path, "cpuset.cpus")
        if os.path.isfile(cpus) and read_text(cpus, "").strip() == "":
            for name in ("cpuset.cpus", "cpuset.mems"):
                with open(os.path.join(path, name), "w") as f:
                    f.write(read_text(os.path.join(parent, name), ""))


def delegate_controllers(cgroup_dir):
    """cgroup v2: enables every available controller for CGROUP_DIR's children (best effort)."""
    controllers = read_text(os.path.join(cgroup_dir, "cgroup.controllers"))
    subtree = os.path.join(cgroup_dir, "cgroup.subtree_control")
    if controllers is None or not os.path.isfile(subtree):
        return
    for c in controllers.split():
        try:
            with open(subtree, "w") as f:
                f.write(f"+{c}")
        except OSError:
            pass


def cg_join(rel, pid):
    """Moves PID into REL in every hierarchy (creating it)."""
    for mp in cgroup_mountpoints():
        cg_mkdir(mp, rel)
        with open(os.path.join(mp, rel, "cgroup.procs"), "w") as f:
            f.write(str(pid))


def cg_pids(rel):
    """Pids of every process in REL and below, in any hierarchy."""
    pids = set()
    for mp in cgroup_mountpoints():
        for d, _, files in os.walk(os.path.join(mp, rel)):
            if "cgroup.procs" in files:
                pids.update(int(p) for p in read_text(os.path.join(d, "cgroup.procs"), "").split())
    return pids


def cg_remove(rel):
    """Removes REL and its children (deepest first) in every hierarchy; busy ones stay."""
    for mp in cgroup_mountpoints():
        for d, _, _ in os.walk(os.path.join(mp, rel), topdown=False):
            try:
                os.rmdir(d)
            except OSError:
                pass


def spawn_daemon(args, log_path, append, cgroup, env=None):
    """Starts ARGS as a daemon: its own session, cwd /, stdin from /dev/null, output to LOG_PATH,
    no inherited descriptor but 0-2 (so a caller's lock or pipe is not held as long as it runs), and
    moved into CGROUP (relative, in every hierarchy) before it executes; ENV replaces the
    environment when given. Returns the Popen."""
    procs_files = []
    for mp in cgroup_mountpoints():
        cg_mkdir(mp, cgroup)
        procs_files.append(os.path.join(mp, cgroup, "cgroup.procs"))

    def join_cgroup():  # runs in the child between fork and exec
        pid = str(os.getpid())
        for f in procs_files:
            with open(f, "w") as out:
                out.write(pid)

    with open(log_path, "a" if append else "w") as out:
        try:
            return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd="/", close_fds=True, start_new_session=True, preexec_fn=join_cgroup,
                                    env=env)
        except subprocess.SubprocessError as e:
            raise TestbedError(f"cannot start {args[0]} in cgroup {cgroup}: {e}") from None
