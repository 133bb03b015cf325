"""Who holds a criteria lease: host, boot, process id and process start time, and whether it is gone.

A holder id is ``host|boot|pid|start|token``. On the holder's own host a lease whose process has exited
(or whose pid now names another process, told apart by the start time) is taken over at once; a holder on
another host is alive as long as it renews its lease (``cerm.cache.store``). [R]
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_SEP = "|"


@dataclass(frozen=True)
class Holder:
    """A parsed holder id."""

    host: str
    boot: str
    pid: int
    start: str
    token: str

    def __str__(self) -> str:
        return _SEP.join((self.host, self.boot, str(self.pid), self.start, self.token))


@lru_cache(maxsize=1)
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: liveness falls back to the pid alone
        return ""


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of ``pid`` from /proc, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return ("?", "")
    fields = raw[raw.rfind(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces and parentheses
    return fields[0], fields[19]


def _start_time(pid: int) -> str:
    stat = _stat(pid) if Path("/proc").is_dir() else None
    return stat[1] if stat else ""


def new_holder_id() -> str:
    """A fresh holder id for this process (one per judge: judges in one process do not share leases)."""
    return str(Holder(socket.gethostname(), _boot_id(), os.getpid(), _start_time(os.getpid()), uuid.uuid4().hex))


def parse_holder(holder: str) -> Holder | None:
    """The parts of a holder id, or None for an id of another form (alive until its lease expires)."""
    parts = holder.split(_SEP)
    if len(parts) != 5 or not parts[2].isdigit():
        return None
    return Holder(parts[0], parts[1], int(parts[2]), parts[3], parts[4])


def is_gone(holder: str) -> bool:
    """True when ``holder`` is known dead: its process on this host has exited, is a zombie, or its pid
    names a younger process; or its host rebooted since. False when alive or unknowable (another host).
    """
    h = parse_holder(holder)
    if h is None or h.host != socket.gethostname():
        return False
    if h.boot and _boot_id() and h.boot != _boot_id():
        return True
    if Path("/proc").is_dir():
        stat = _stat(h.pid)
        if stat is None or stat[0] in ("Z", "X"):
            return True
        return bool(h.start) and bool(stat[1]) and stat[1] != h.start
    try:
        os.kill(h.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by another user
        return False
    return False


def held_by_this_process(holder: str) -> bool:
    """True for a holder id made by this very process (not by a parent it was forked from)."""
    h = parse_holder(holder)
    return h is not None and h.pid == os.getpid() and h.host == socket.gethostname()
