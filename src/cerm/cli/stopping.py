"""How a judging command stops early: on SIGTERM/SIGINT, or at a file or store it cannot write.

Either way what is finished stays (outputs are flushed per record, the caches commit per entry) and the
command says, in one line, that the same command resumes. A signal releases this process's criteria leases
(so a rerun or a replica never waits for them) and exits 143 (SIGTERM) or 130 (SIGINT); the unwinding
closes the output files first. If it takes longer than ``GRACE_S`` (a worker pool finishing a chunk), or a
second signal comes, the process exits at once: on this host a dead holder's lease is taken over anyway.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import typer

from cerm.cache import release_all_leases
from cerm.cli.common import console, fail
from cerm.io import WriteError

GRACE_S = 10.0  # after a signal, how long the orderly unwinding may take before the process exits anyway
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A SIGTERM or SIGINT, raised in the main thread (a BaseException: ``except Exception`` lets it pass)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _State:
    signum: int | None = None
    finished = False
    lock = threading.Lock()


def _finish(signum: int) -> None:
    """Release the leases and say how to resume; once, whichever of the unwinding and the watchdog is first."""
    with _State.lock:
        if _State.finished:
            return
        _State.finished = True
    release_all_leases()
    console.print(f"interrupted ({signal.Signals(signum).name}); resume with the same command")
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _watchdog(signum: int) -> None:
    time.sleep(GRACE_S)
    _finish(signum)
    os._exit(128 + signum)


def _on_signal(signum: int, frame: Any) -> None:
    if _State.signum is not None:  # asked twice: stop now
        os._exit(128 + signum)
    _State.signum = signum
    threading.Thread(target=_watchdog, args=(signum,), daemon=True, name="cerm-stop-watchdog").start()
    raise Interrupted(signum)


@contextlib.contextmanager
def stops_cleanly(handle_signals: bool = True) -> Iterator[None]:
    """Run a judging command: signals and unwritable files end it as described above."""
    installed = handle_signals and threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _on_signal) for s in _SIGNALS} if installed else {}
    try:
        yield
    except Interrupted as e:
        _finish(e.signum)
        raise typer.Exit(128 + e.signum) from None
    except WriteError as e:
        raise fail(str(e), code=1) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
