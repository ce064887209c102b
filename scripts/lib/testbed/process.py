"""Processes and files: commands run without a shell, pid files, polling."""

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

POLL_S = 0.1  # every wait polls its condition this often


class TestbedError(Exception):
    """A failure to report as `testbed: error: MESSAGE` (exit 1)."""


def log(message):
    print(f"testbed: {message}", file=sys.stderr, flush=True)


def run(args, check=True, timeout=None, stdout=subprocess.DEVNULL):
    """Runs ARGS (a list, no shell); its stderr is kept for the error. With CHECK, a failure (or a
    missing program, or TIMEOUT) raises TestbedError; otherwise it returns None for those."""
    try:
        done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE,
                              text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        if check:
            raise TestbedError(f"{shlex.join(args)}: {e}") from None
        return None
    if check and done.returncode != 0:
        raise TestbedError(f"{shlex.join(args)} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done


def succeeds(args, timeout=None):
    """ARGS exits 0 (within TIMEOUT seconds)."""
    done = run(args, check=False, timeout=timeout)
    return done is not None and done.returncode == 0


def have(program):
    return shutil.which(program) is not None


def read_text(path, default=None):
    """The file's content without its trailing newlines, or DEFAULT when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\n")
    except (OSError, UnicodeDecodeError):
        return default


def write_text(path, text, mode=None):
    """Writes TEXT to PATH through a temporary file and a rename (readers never see half a file);
    with MODE (0o600 for secrets) the file has that mode from its first byte."""
    tmp = f"{path}.tmp"
    remove(tmp)  # a leftover would keep its own mode
    with open(tmp, "w", encoding="utf-8", opener=lambda p, flags: os.open(p, flags, mode or 0o666)) as f:
        f.write(text)
    os.replace(tmp, path)


def remove(*paths):
    """Removes files and directory trees; what is already gone is fine."""
    for p in paths:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def copy_as_is(src, dst):
    """Copies a file or tree keeping owners, modes and times (`cp -a`; shutil does not keep owners)."""
    run(["cp", "-a", "--", src, dst])


def read_pid(pidfile):
    text = read_text(pidfile, "")
    return int(text) if re.fullmatch(r"[0-9]+", text) else None


def alive(pidfile, comm=None):
    """The pid in PIDFILE when it runs (and its command name is COMM), else None. Zombies are dead."""
    pid = read_pid(pidfile)
    if pid is None:
        return None
    stat = read_text(f"/proc/{pid}/stat")
    if stat is None:
        return None
    if comm is not None and read_text(f"/proc/{pid}/comm") != comm:
        return None
    fields = stat[stat.rfind(")") + 1:].split()
    return None if fields and fields[0] == "Z" else pid


def comm_of(binary):
    """The command name (/proc/PID/comm) a process running BINARY has: its first 15 bytes."""
    return os.path.basename(binary)[:15]


def send_signal(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def stop_pidfile(pidfile, comm, wait_s=10):
    """SIGTERM, wait up to WAIT_S, then SIGKILL the process named in PIDFILE if it is still the
    process we started (same command name). Removes the pid file."""
    pid = alive(pidfile, comm)
    if pid is not None:
        send_signal([pid], signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while alive(pidfile, comm) is not None and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if alive(pidfile, comm) is not None:
            log(f"{comm} ({pid}) ignored SIGTERM for {wait_s}s; killing it")
            send_signal([pid], signal.SIGKILL)
    remove(pidfile)


def wait_until(limit_s, what, ready):
    """Polls READY() every POLL_S until it is true; False (and a log line) after LIMIT_S seconds."""
    deadline = time.monotonic() + limit_s
    while not ready():
        if time.monotonic() >= deadline:
            log(f"timed out after {limit_s:g}s waiting for {what}")
            return False
        time.sleep(POLL_S)
    return True

