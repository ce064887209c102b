"""scripts/ceph: a throwaway single-node Ceph for tests: one monitor, one OSD, no mgr, cephx, pool `rbd`
(8 PGs, size 1, initialised for rbd) and the client user `client.uw` the product uses. Run as root.
See docs/testbed.md (section Ceph).

  scripts/ceph up DIR [--addr IP] [--store memstore|bluestore] [--mon-port P] [--osd-ports MIN-MAX]
                            start (idempotent); writes DIR/ceph.json last. --addr default 127.0.0.1,
                            --store default memstore, --mon-port default 16789: the monitor listens
                            on P (msgr v1) and P+1 (msgr v2); --osd-ports default P+11-P+60 (the
                            OSD's public, cluster and heartbeat ports are taken from that range)
  scripts/ceph down DIR     stop the monitor and the OSD, remove DIR (idempotent)
  scripts/ceph status DIR   one line; exit 0 when mon and OSD run and osd.0 is up
  scripts/ceph kill-osd DIR     kill -9 the OSD (fault tests)
  scripts/ceph start-osd DIR    start the OSD again and wait until it is up and serves the pool
                                (bluestore only: memstore loses everything on a restart)

Env: UW_CEPH_TIMEOUT  seconds any one step may wait (default 60)
Exit: 0 done (status: up), 1 error (status: not up), 2 usage.
"""

import ipaddress
import re
import sys

from .ceph import DEFAULT_ADDR, DEFAULT_MON_PORT, STORES, CephError, Cluster, Settings
from .process import TestbedError


def usage():
    print(__doc__.rstrip(), file=sys.stderr)
    sys.exit(2)


def parse_port(text, what):
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 1 <= int(text) <= 65535:
        raise CephError(f"{what} must be a port number (got {text})")
    return int(text)


def parse_up_args(args):
    """(DIR, Settings) from `up`'s arguments."""
    opts = {"--addr": DEFAULT_ADDR, "--store": "memstore", "--mon-port": str(DEFAULT_MON_PORT), "--osd-ports": ""}
    positional = []
    i = 0
    while i < len(args):
        a = args[i]
        name, eq, value = a.partition("=")
        if a in ("-h", "--help"):
            usage()
        elif a in opts:
            if i + 1 >= len(args):
                usage()
            opts[a] = args[i + 1]
            i += 1
        elif eq and name in opts:
            opts[name] = value
        elif a.startswith("-"):
            usage()
        else:
            positional.append(a)
        i += 1
    if len(positional) != 1:
        usage()
    try:
        ipaddress.IPv4Address(opts["--addr"])
    except ValueError:
        raise CephError(f"--addr must be an IPv4 address (got {opts['--addr']})") from None
    if opts["--store"] not in STORES:
        raise CephError(f"--store must be memstore or bluestore (got {opts['--store']})")
    mon_port = parse_port(opts["--mon-port"], "--mon-port")
    if mon_port == 65535:
        raise CephError("--mon-port needs P+1 free too (msgr v2)")
    osd_ports = None
    if opts["--osd-ports"]:
        low, dash, high = opts["--osd-ports"].partition("-")
        if not dash:
            raise CephError(f"--osd-ports must be MIN-MAX (got {opts['--osd-ports']})")
        osd_ports = (parse_port(low, "--osd-ports"), parse_port(high, "--osd-ports"))
        if osd_ports[1] - osd_ports[0] < 15:
            raise CephError("--osd-ports needs at least 16 ports (the OSD binds 8)")
        if osd_ports[0] <= mon_port + 1 and mon_port <= osd_ports[1]:
            raise CephError("--osd-ports must not include the monitor's ports P and P+1")
    settings = Settings(opts["--addr"], opts["--store"], mon_port, osd_ports)
    if settings.osd_ports[1] > 65535:
        raise CephError("--mon-port too high for the default --osd-ports (P+11-P+60); give --osd-ports")
    return positional[0], settings


def one_dir(args):
    if len(args) != 1 or args[0].startswith("-"):
        usage()
    return args[0]


def main(argv):
    """Runs the command line ARGV (without the program name); returns the exit status."""
    if not argv or argv[0] in ("-h", "--help"):
        usage()
    command, args = argv[0], argv[1:]
    try:
        if command == "up":
            cluster_dir, settings = parse_up_args(args)
            Cluster(cluster_dir).up(settings)
        elif command == "down":
            Cluster(one_dir(args)).down()
        elif command == "status":
            ok, line = Cluster(one_dir(args)).status()
            print(line)
            return 0 if ok else 1
        elif command == "kill-osd":
            Cluster(one_dir(args)).kill_osd()
        elif command == "start-osd":
            Cluster(one_dir(args)).start_osd_again()
        else:
            usage()
        return 0
    except (TestbedError, OSError) as e:
        print(f"ceph: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
