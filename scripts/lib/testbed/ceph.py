"""A throwaway single-node Ceph for tests (scripts/ceph; the command line is cephcli.py): one monitor,
one OSD, no mgr, cephx, pool `rbd` (8 PGs, size 1, initialised for rbd) and the client user `client.uw`
the product uses, every file under one directory. See docs/testbed.md (section Ceph).

Bootstrap (no ceph CLI: each call costs ~0.5 s on 2 cores): keys are made here, `monmaptool`,
`ceph-mon --mkfs`, the monitor started; then, through one librados connection (python3-rados),
`osd new`, `ceph-osd --mkfs --no-mon-config`, the OSD started, the pool made and initialised
(python3-rbd's pool_init, as `rbd pool init`), client.uw made; DIR/ceph.json is written last.
Daemons run in the foreground mode (-f) in their own session, so their pids are known at once.
"""

import base64
import errno
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid

from .process import POLL_S, TestbedError, alive, have, read_text, remove, send_signal, write_text

DEFAULT_ADDR = "127.0.0.1"
DEFAULT_MON_PORT = 16789
STORES = ("memstore", "bluestore")
MON_ID = "a"
OSD_ID = 0
POOL = "rbd"
POOL_PGS = 8
CLIENT = "uw"
CLIENT_CAPS = ["mon", "profile rbd", "osd", f"profile rbd pool={POOL}"]
MEMSTORE_BYTES = 1 << 30
BLUESTORE_BYTES = 4 << 30
MARKER = ".uw-ceph"  # DIR is one of ours: `down` removes only such directories
MON_COMM, OSD_COMM = "ceph-mon", "ceph-osd"
STOP_WAIT_S = 10  # SIGTERM, then SIGKILL after this long


class CephError(TestbedError):
    """A failure to report as `ceph: error: MESSAGE` (exit 1)."""


def log(message):
    print(f"ceph: {message}", file=sys.stderr, flush=True)


def new_key():
    """A cephx secret as ceph-authtool --gen-key makes it: CryptoKey(type AES, created, 16 bytes)."""
    return base64.b64encode(struct.pack("<HIIH", 1, int(time.time()), 0, 16) + os.urandom(16)).decode()


def keyring_text(entity, key, caps=()):
    """A keyring file with one ENTITY; CAPS is [(service, cap), ...]."""
    return f"[{entity}]\n\tkey = {key}\n" + "".join(f'\tcaps {s} = "{c}"\n' for s, c in caps)


def tail(path, lines=25):
    text = read_text(path)
    if text is None:
        return f"({path} cannot be read)"
    return f"last lines of {path}:\n" + "\n".join(text.splitlines()[-lines:])


def port_owner(addr, port):
    """'pid N (comm)' of the process listening on ADDR:PORT (or on 0.0.0.0:PORT), or '' if not known."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in (read_text(table, "") or "").splitlines()[1:]:
            f = line.split()
            if len(f) < 10 or f[3] != "0A":  # LISTEN
                continue
            host, _, hport = f[1].partition(":")
            if int(hport, 16) != port:
                continue
            if len(host) == 8:
                ip = socket.inet_ntoa(struct.pack("<I", int(host, 16)))
                if ip not in (addr, "0.0.0.0"):
                    continue
            inodes.add(f[9])
    for entry in os.listdir("/proc") if inodes else ():
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                link = os.readlink(f"/proc/{entry}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    cmdline = (read_text(f"/proc/{entry}/cmdline", "") or "").replace("\0", " ").strip()
                    return f"pid {entry} ({cmdline[:200]})"
        except OSError:
            continue
    return ""


def check_port_free(addr, port):
    """Raises CephError when ADDR:PORT cannot be bound (taken, or ADDR is not on this machine)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Ceph binds: TIME_WAIT is fine
        s.bind((addr, port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            owner = port_owner(addr, port) or "another process"
            raise CephError(f"{addr}:{port} (a monitor port) is taken by {owner}: a second cluster there would "
                            f"talk to that one's monitor; stop it or pick another --mon-port") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise CephError(f"address {addr} is not on this machine") from None
        raise CephError(f"cannot bind {addr}:{port}: {e}") from None
    finally:
        s.close()


class Settings:
    """What `up` was asked for: address, store, monitor port, OSD port range."""

    def __init__(self, addr=DEFAULT_ADDR, store="memstore", mon_port=DEFAULT_MON_PORT, osd_ports=None):
        self.addr = addr
        self.store = store
        self.mon_port = mon_port
        self.osd_ports = tuple(osd_ports) if osd_ports else (mon_port + 11, mon_port + 60)

    def as_dict(self):
        return {"addr": self.addr, "store": self.store, "mon_port": self.mon_port, "osd_ports": list(self.osd_ports)}

    @classmethod
    def from_dict(cls, d):
        return cls(d["addr"], d["store"], int(d["mon_port"]), d["osd_ports"])

    def __eq__(self, other):
        return isinstance(other, Settings) and self.as_dict() == other.as_dict()

    def describe(self):
        return (f"--addr {self.addr} --store {self.store} --mon-port {self.mon_port} "
                f"--osd-ports {self.osd_ports[0]}-{self.osd_ports[1]}")

    @property
    def mon_host(self):
        """msgr v2 on P+1, v1 on P."""
        return f"[v2:{self.addr}:{self.mon_port + 1},v1:{self.addr}:{self.mon_port}]"


class Deadline:
    def __init__(self, limit_s):
        self.limit_s = limit_s
        self.at = time.monotonic() + limit_s

    def left(self):
        return self.at - time.monotonic()


class Cluster:
    """The cluster whose every file lives in DIR: ceph.conf, cluster.json (the settings), keyrings,
    mon/ and osd/ (data), osd.block (bluestore), run/ (pid files, admin sockets), log/."""

    def __init__(self, cluster_dir, timeout_s=None):
        if timeout_s is None:
            timeout_s = timeout_from_env()
        self.dir = os.path.abspath(cluster_dir)
        self.timeout_s = timeout_s
        self.conf = self.file("ceph.conf")
        self.settings_file = self.file("cluster.json")
        self.description_file = self.file("ceph.json")
        self.mon_dir, self.osd_dir = self.file("mon"), self.file("osd")
        self.run_dir, self.log_dir = self.file("run"), self.file("log")
        self.block = self.file("osd.block")
        self.mon_keyring = self.file("mon.keyring")
        self.admin_keyring = self.file("client.admin.keyring")
        self.client_keyring = self.file(f"client.{CLIENT}.keyring")
        self.mon_pidfile = os.path.join(self.run_dir, "mon.pid")
        self.osd_pidfile = os.path.join(self.run_dir, "osd.pid")
        self.mon_log = os.path.join(self.log_dir, f"mon.{MON_ID}.log")
        self.osd_log = os.path.join(self.log_dir, f"osd.{OSD_ID}.log")
        self.lock_file = None

    def file(self, name):
        return os.path.join(self.dir, name)

    # -- state

    def lock(self):
        """Serialises up/down/start-osd on DIR (DIR/.lock, close-on-exec: daemons do not hold it)."""
        import fcntl
        os.makedirs(self.dir, exist_ok=True)
        self.lock_file = open(self.file(".lock"), "w")
        fcntl.flock(self.lock_file, fcntl.LOCK_EX)

    def ours(self):
        """DIR was made by `up` (or holds nothing but our lock)."""
        if os.path.exists(self.file(MARKER)):
            return True
        try:
            return set(os.listdir(self.dir)) <= {".lock"}
        except OSError:
            return False

    def settings(self):
        text = read_text(self.settings_file)
        if text is None:
            return None
        try:
            return Settings.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError):
            return None

    def mon_pid(self):
        return alive(self.mon_pidfile, MON_COMM)

    def osd_pid(self):
        return alive(self.osd_pidfile, OSD_COMM)

    def daemons(self):
        """Pids of every ceph-mon and ceph-osd running with this DIR's ceph.conf (pid files or not)."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or read_text(f"/proc/{entry}/comm") not in (MON_COMM, OSD_COMM):
                continue
            stat = read_text(f"/proc/{entry}/stat", "")
            if stat[stat.rfind(")") + 1:].split()[:1] == ["Z"]:
                continue
            args = (read_text(f"/proc/{entry}/cmdline", "") or "").split("\0")
            if self.conf in args:
                pids.append(int(entry))
        return pids

    def stop_daemons(self):
        """Stops every daemon of DIR, the OSD first (it tells the monitor it goes, which takes
        osd_mon_shutdown_timeout, 5 s, when the monitor is gone already); returns once all are gone."""
        self.stop_pids([p for p in self.daemons() if read_text(f"/proc/{p}/comm") == OSD_COMM])
        self.stop_pids(self.daemons())

    def stop_pids(self, pids):
        """SIGTERM to PIDS (daemons of DIR), SIGKILL after STOP_WAIT_S; returns once they are gone."""
        if not pids:
            return
        send_signal(pids, signal.SIGTERM)

        def left():
            return [p for p in self.daemons() if p in pids]
        deadline = Deadline(STOP_WAIT_S)
        while left() and deadline.left() > 0:
            time.sleep(POLL_S)
        if left():
            log(f"pids {left()} ignored SIGTERM for {STOP_WAIT_S} s; killing them")
            send_signal(left(), signal.SIGKILL)
            deadline = Deadline(STOP_WAIT_S)
            while left():
                if deadline.left() <= 0:
                    raise CephError(f"pids {left()} survive SIGKILL")
                time.sleep(POLL_S)

    def wipe(self):
        """Stops the daemons and removes everything in DIR but the lock and the marker."""
        self.stop_daemons()
        for entry in os.listdir(self.dir):
            if entry not in (".lock", MARKER):
                remove(self.file(entry))

    # -- making the cluster

    def write_conf(self, s, fsid):
        d = self.dir
        store = (f"\tosd objectstore = memstore\n\tmemstore device bytes = {MEMSTORE_BYTES}\n"
                 if s.store == "memstore" else
                 f"\tosd objectstore = bluestore\n\tbluestore block path = {self.block}\n"
                 f"\tbluestore block create = false\n\tbluestore fsck on mkfs = false\n")
        write_text(self.conf, f"""# Made by scripts/ceph up (docs/testbed.md): a throwaway single-node cluster.
[global]
\tfsid = {fsid}
\tmon host = {s.mon_host}
\tpublic addr = {s.addr}
\tms bind ipv6 = false
\tms bind port min = {s.osd_ports[0]}
\tms bind port max = {s.osd_ports[1]}
\tauth cluster required = cephx
\tauth service required = cephx
\tauth client required = cephx
\trun dir = {self.run_dir}
\tosd pool default size = 1
\tosd pool default min size = 1
\tosd pool default pg autoscale mode = off
\tmon allow pool size one = true
\tmon allow pool delete = true
\tmon warn on pool no redundancy = false
\tosd crush chooseleaf type = 0
\tpaxos propose interval = 0.05
\trados osd op timeout = 5
\tclient mount timeout = 3
[mon]
\tmon data = {d}/mon
\tlog file = {d}/log/$name.log
\tpid file = {d}/run/$name.pid
\tadmin socket = {d}/run/$name.asok
[osd]
\tosd data = {d}/osd
\tkeyring = {d}/osd/keyring
\tlog file = {d}/log/$name.log
\tpid file = {d}/run/$name.pid
\tadmin socket = {d}/run/$name.asok
{store}""")

    def make_mon(self, s):
        """A fresh cluster: ceph.conf, the mon. and client.admin keys, the monitor's store."""
        fsid = str(uuid.uuid4())
        for d in (self.run_dir, self.log_dir):
            os.makedirs(d, exist_ok=True)
        write_text(self.settings_file, json.dumps(s.as_dict()) + "\n")
        self.write_conf(s, fsid)
        admin_key = new_key()
        write_text(self.admin_keyring, keyring_text("client.admin", admin_key), mode=0o600)
        all_caps = [("mds", "allow *"), ("mgr", "allow *"), ("mon", "allow *"), ("osd", "allow *")]
        write_text(self.mon_keyring, keyring_text("mon.", new_key(), [("mon", "allow *")])
                   + keyring_text("client.admin", admin_key, all_caps), mode=0o600)
        monmap = self.file("monmap")
        self.run(["monmaptool", "--create", "--fsid", fsid, "--addv", MON_ID, s.mon_host, monmap])
        self.run(["ceph-mon", "-c", self.conf, "--mkfs", "-i", MON_ID, "--monmap", monmap,
                  "--keyring", self.mon_keyring])
        write_text(os.path.join(self.mon_dir, "uw-made"), fsid + "\n")

    def make_osd(self, rados):
        """osd.0: registered with the monitor (`osd new`, with its key) and its store made."""
        osd_uuid, key = str(uuid.uuid4()), new_key()
        self.mon_command(rados, "osd new", inbuf=json.dumps({"cephx_secret": key}).encode(),
                         uuid=osd_uuid, id=OSD_ID)
        remove(self.osd_dir)
        os.makedirs(self.osd_dir)
        if self.settings().store == "bluestore":
            remove(self.block)
            with open(self.block, "wb") as f:
                f.truncate(BLUESTORE_BYTES)  # sparse
        self.run(["ceph-osd", "-c", self.conf, "--mkfs", "-i", str(OSD_ID), "--osd-uuid", osd_uuid,
                  "--no-mon-config"], log_path=self.osd_log)
        write_text(os.path.join(self.osd_dir, "keyring"), keyring_text(f"osd.{OSD_ID}", key), mode=0o600)
        write_text(os.path.join(self.osd_dir, "uw-made"), osd_uuid + "\n")

    def run(self, args, log_path=None):
        """Runs a setup command (bounded by the timeout); a failure raises with its output."""
        try:
            done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise CephError(f"{' '.join(args)} did not finish in {self.timeout_s:g} s"
                            + (f"; {tail(log_path)}" if log_path else "")) from None
        if done.returncode != 0:
            raise CephError(f"{' '.join(args)} failed (exit {done.returncode}): {done.stdout.strip()[-2000:]}"
                            + (f"\n{tail(log_path)}" if log_path else ""))

    def spawn(self, args, pidfile, out_name):
        """Starts a daemon in the foreground mode (-f) fully detached: its own session, cwd /, stdin
        /dev/null, output to DIR/log/OUT_NAME, no inherited descriptor but 0-2; pid in PIDFILE."""
        with open(os.path.join(self.log_dir, out_name), "a") as out:
            p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd="/",
                                 close_fds=True, start_new_session=True)
        write_text(pidfile, f"{p.pid}\n")
        return p.pid

    def start_mon(self, s):
        check_port_free(s.addr, s.mon_port)
        check_port_free(s.addr, s.mon_port + 1)
        self.spawn(["ceph-mon", "-f", "-c", self.conf, "-i", MON_ID], self.mon_pidfile, "mon.out")

    def start_osd(self):
        self.spawn(["ceph-osd", "-f", "-c", self.conf, "-i", str(OSD_ID)], self.osd_pidfile, "osd.out")

    # -- talking to it (librados, one connection per command)

    def connect(self, deadline, user="admin", keyring=None):
        """A librados connection as USER; connecting and every op are bounded by DEADLINE."""
        import rados
        s = self.settings()
        ports = (s.mon_port, s.mon_port + 1)
        self.wait(deadline, f"the monitor to listen on {s.addr}:{ports[0]}", self.mon_log,
                  lambda: self.mon_listens(s.addr, ports[0]), need_mon=True)
        limit = str(max(1, int(deadline.left() + 0.999)))
        conn = rados.Rados(conffile=self.conf, rados_id=user,
                           conf={"keyring": keyring or self.admin_keyring, "client_mount_timeout": limit,
                                 "rados_osd_op_timeout": limit, "rados_mon_op_timeout": limit})
        try:
            conn.connect()
        except rados.Error as e:
            conn.shutdown()
            raise CephError(f"cannot connect to the monitor at {s.mon_host} as client.{user}: {e}\n"
                            f"{tail(self.mon_log)}") from None
        return conn

    def mon_listens(self, addr, port):
        try:
            socket.create_connection((addr, port), timeout=1).close()
            return True
        except OSError:
            return False

    def mon_command(self, conn, prefix, inbuf=b"", **args):
        """The monitor command PREFIX with ARGS; its JSON answer (or None when it has none)."""
        ret, out, err = conn.mon_command(json.dumps({"prefix": prefix, "format": "json", **args}), inbuf)
        if ret != 0:
            raise CephError(f"mon command {prefix} {args}: {os.strerror(-ret) if ret < 0 else ret}: {err}")
        return json.loads(out) if out.strip() else None

    def osd_state(self, conn):
        """(up, up_from) of osd.0 in the monitor's current map ((False, None) when it has none)."""
        for o in self.mon_command(conn, "osd dump").get("osds", []):
            if o.get("osd") == OSD_ID:
                return bool(o.get("up")) and bool(o.get("in")), o.get("up_from")
        return False, None

    def pool_exists(self, conn):
        """The monitor's map has the pool (this client's own map may be older)."""
        return POOL in self.mon_command(conn, "osd pool ls")

    def wait(self, deadline, what, log_path, ready, need_mon=False, need_osd=False):
        """Polls READY() every POLL_S until DEADLINE; a daemon it needs dying or the time running out
        raises CephError with the tail of LOG_PATH."""
        while True:
            if ready():
                return
            if need_mon and self.mon_pid() is None:
                raise CephError(f"ceph-mon died while waiting for {what}; {tail(self.mon_log)}")
            if need_osd and self.osd_pid() is None:
                raise CephError(f"ceph-osd died while waiting for {what}; {tail(self.osd_log)}")
            if deadline.left() <= 0:
                raise CephError(f"timed out after {deadline.limit_s:g} s waiting for {what}; {tail(log_path)}")
            time.sleep(POLL_S)

    def wait_osd_up(self, conn, deadline, old_up_from):
        """Until osd.0 is up and in with an up_from other than OLD_UP_FROM (the map may still show a
        killed instance up), then until the pool serves a read (its PGs are active)."""
        def up():
            state, up_from = self.osd_state(conn)
            return state and (old_up_from is None or up_from != old_up_from)
        self.wait(deadline, "osd.0 to be up", self.osd_log, up, need_mon=True, need_osd=True)
        if self.pool_exists(conn):
            conn.wait_for_latest_osdmap()
            self.wait_pool(conn, deadline)

    def wait_pool(self, conn, deadline):
        """A read in the pool is answered (blocks until its PGs are active; bounded by the op timeout)."""
        import rados
        ioctx = conn.open_ioctx(POOL)
        try:
            ioctx.stat("uw-ceph-probe")
        except rados.ObjectNotFound:
            pass
        except rados.Error as e:
            raise CephError(f"pool {POOL} does not answer a read ({e}); {tail(self.osd_log)}") from None
        finally:
            ioctx.close()

    # -- commands

    def up(self, s, replace=False):
        """Brings the cluster up with settings S (converging what is there); returns ceph.json's content.
        With REPLACE, a cluster up with other settings is replaced instead of refused."""
        preflight()
        started = time.monotonic()
        if os.path.isdir(self.dir) and not self.ours():
            raise CephError(f"{self.dir} exists and was not made by scripts/ceph; pick an empty or new directory")
        self.lock()
        write_text(self.file(MARKER), "scripts/ceph\n")
        remove(self.description_file)
        old = self.settings()
        if old is not None and old != s:
            if (self.mon_pid() or self.osd_pid()) and not replace:
                raise CephError(f"the Ceph in {self.dir} is up with {old.describe()}; run scripts/ceph down "
                                f"{self.dir} first")
            self.wipe()
        mon_made = os.path.exists(os.path.join(self.mon_dir, "uw-made"))
        osd_made = os.path.exists(os.path.join(self.osd_dir, "uw-made"))
        if mon_made and s.store == "memstore" and osd_made and self.osd_pid() is None:
            log("the memstore OSD is gone (its data with it): making a new cluster")
            mon_made = False
        if not mon_made:
            self.wipe()
            self.make_mon(s)
        deadline = Deadline(self.timeout_s)
        if self.mon_pid() is None:
            self.stop_daemons()  # an OSD without a monitor; one that lost its pid file
            self.start_mon(s)
        conn = self.connect(deadline)
        try:
            if not os.path.exists(os.path.join(self.osd_dir, "uw-made")):
                self.make_osd(conn)
            up_from = None
            if self.osd_pid() is None:
                state, old_up_from = self.osd_state(conn)
                up_from = old_up_from if state else None
                self.start_osd()
            self.wait_osd_up(conn, deadline, up_from)
            if not self.pool_exists(conn):
                self.mon_command(conn, "osd pool create", pool=POOL, pg_num=POOL_PGS, pgp_num=POOL_PGS,
                                 pool_type="replicated")
            self.wait(deadline, f"pool {POOL}", self.mon_log, lambda: self.pool_exists(conn), need_mon=True)
            conn.wait_for_latest_osdmap()  # this client's map has the pool
            self.init_pool(conn)
            self.wait_pool(conn, deadline)
            made = self.mon_command(conn, "auth get-or-create", entity=f"client.{CLIENT}", caps=CLIENT_CAPS)
            write_text(self.client_keyring, keyring_text(f"client.{CLIENT}", made[0]["key"]), mode=0o600)
        finally:
            conn.shutdown()
        doc = self.description()
        write_text(self.description_file, json.dumps(doc, indent=2) + "\n", mode=0o600)
        log(f"up ({s.store}, mon {s.mon_host}) in {(time.monotonic() - started) * 1000:.0f} ms; "
            f"{self.description_file}")
        return doc

    def init_pool(self, conn):
        """`rbd pool init rbd`: the application tag and rbd's pool validation (librbd)."""
        import rbd
        ioctx = conn.open_ioctx(POOL)
        try:
            rbd.RBD().pool_init(ioctx, False)
        finally:
            ioctx.close()

    def description(self):
        """ceph.json's content."""
        s = self.settings()
        fsid = None
        for line in (read_text(self.conf, "") or "").splitlines():
            m = re.fullmatch(r"\s*fsid = (\S+)", line)
            if m:
                fsid = m.group(1)

        def user(name, keyring):
            m = re.search(r"key = (\S+)", read_text(keyring, "") or "")
            return {"user": name, "keyring": keyring, "key": m.group(1) if m else None}

        return {"dir": self.dir, "conf": self.conf, "fsid": fsid, "mon_host": s.mon_host, "addr": s.addr,
                "pool": POOL, "store": s.store, "admin": user("admin", self.admin_keyring),
                "client": user(CLIENT, self.client_keyring), "mon_pid": self.mon_pid(), "osd_pid": self.osd_pid()}

    def down(self):
        if not os.path.isdir(self.dir):
            log(f"down: nothing to do ({self.dir} does not exist)")
            return
        if not self.ours():
            raise CephError(f"{self.dir} was not made by scripts/ceph (no {MARKER}); not removing it")
        started = time.monotonic()
        self.lock()
        self.stop_daemons()
        remove(self.dir)
        log(f"down in {(time.monotonic() - started) * 1000:.0f} ms")

    def status(self):
        """(up, one line)."""
        s = self.settings()
        if s is None:
            return False, f"ceph down: no cluster in {self.dir}"
        mon, osd = self.mon_pid(), self.osd_pid()
        if mon is None or osd is None:
            return False, (f"ceph down: mon {'pid ' + str(mon) if mon else 'not running'}, osd.0 "
                           f"{'pid ' + str(osd) if osd else 'not running'} ({self.dir})")
        try:
            conn = self.connect(Deadline(min(self.timeout_s, 5)))
            try:
                state, _ = self.osd_state(conn)
            finally:
                conn.shutdown()
        except CephError as e:
            return False, f"ceph down: the monitor (pid {mon}) does not answer: {str(e).splitlines()[0]}"
        if not state:
            return False, f"ceph down: osd.0 (pid {osd}) is not up in the monitor's map ({self.dir})"
        return True, f"ceph up: mon.{MON_ID} pid {mon} on {s.mon_host}, osd.0 pid {osd} up, {s.store} ({self.dir})"

    def kill_osd(self):
        pid = self.osd_pid()
        if pid is None:
            log("kill-osd: the OSD is not running")
            return
        started = time.monotonic()
        send_signal([pid], signal.SIGKILL)
        self.wait(Deadline(self.timeout_s), f"ceph-osd ({pid}) to die", self.osd_log, lambda: self.osd_pid() is None)
        log(f"kill-osd: pid {pid} killed in {(time.monotonic() - started) * 1000:.0f} ms")

    def start_osd_again(self):
        s = self.settings()
        if s is None or not os.path.exists(os.path.join(self.osd_dir, "uw-made")):
            raise CephError(f"no cluster in {self.dir}: run scripts/ceph up {self.dir}")
        if s.store == "memstore" and self.osd_pid() is None:
            raise CephError("the OSD uses memstore, which loses everything when it stops: start-osd needs "
                            "a cluster made with --store bluestore")
        self.lock()
        started = time.monotonic()
        deadline = Deadline(self.timeout_s)
        conn = self.connect(deadline)
        try:
            up_from = None
            if self.osd_pid() is None:
                state, old_up_from = self.osd_state(conn)
                up_from = old_up_from if state else None
                self.start_osd()
            self.wait_osd_up(conn, deadline, up_from)
        finally:
            conn.shutdown()
        doc = self.description()
        write_text(self.description_file, json.dumps(doc, indent=2) + "\n", mode=0o600)
        log(f"start-osd: osd.0 (pid {doc['osd_pid']}) up and serving in {(time.monotonic() - started) * 1000:.0f} ms")


def timeout_from_env():
    t = os.environ.get("UW_CEPH_TIMEOUT") or "60"
    try:
        return float(t)
    except ValueError:
        raise CephError(f"UW_CEPH_TIMEOUT must be a number of seconds (got {t})") from None


def preflight():
    if os.geteuid() != 0:
        raise CephError("must run as root")
    for tool in ("ceph-mon", "ceph-osd", "monmaptool"):
        if not have(tool):
            raise CephError(f"missing {tool}: run scripts/install-deps")
    try:
        import rados  # noqa: F401
        import rbd  # noqa: F401
    except ImportError:
        raise CephError("missing the python3-rados or python3-rbd module (run scripts/install-deps; "
                        "run this with /usr/bin/python3)") from None
