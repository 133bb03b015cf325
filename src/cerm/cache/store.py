"""The interface both caches use, and the criteria lease every store implements the same way.

A lease is the right to generate one key's criteria (single flight across the processes sharing a store).
It names its holder (``cerm.cache.holder``), lasts ``lease_ttl_s`` and is renewed by the store while the
holder works, so a lease outlives its holder by at most ``lease_ttl_s`` (a holder that crashed on another
host), and not at all on the holder's own host, where a waiter sees the process is gone and takes over.
A live holder that hangs keeps renewing: waiters bound their own wait (``Judge``) and then generate.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from cerm.cache.holder import held_by_this_process, is_gone
from cerm.cache.records import CriteriaRecord

logger = logging.getLogger(__name__)

# [R] how long a lease lives without renewal, and how often the store renews the ones it holds: a crashed
# holder on another host delays waiters by at most LEASE_TTL_S; four renewals may be missed (a busy machine,
# a slow write) before a live holder loses its lease, which costs one duplicate generation, never a result
LEASE_TTL_S = 5.0
RENEWALS_PER_TTL = 5

_STORES: weakref.WeakSet[Store] = weakref.WeakSet()


class Store:
    """Where criteria, judgments and criteria leases live.

    ``Store(path)`` opens a SQLite file (``None``: in memory, one process); ``Store("redis://host:port/db")``
    connects to a Redis server shared by replicas on several hosts. Both keep the same semantics.
    """

    location: str  # the file or URL, for messages
    lease_ttl_s: float

    def __new__(cls, *args: Any, **kwargs: Any) -> Store:
        """``Store(...)`` builds the implementation its first argument names (``cerm.cache.factory``)."""
        if cls is Store:  # the front door picks the implementation from the path or URL
            from cerm.cache.factory import store_class

            cls = store_class(args[0] if args else kwargs.get("path"))
        return super().__new__(cls)

    # ---- criteria --------------------------------------------------------------------------------
    def get_criteria(self, key: str) -> CriteriaRecord | None:
        """The criteria record under ``key``, or None."""
        raise NotImplementedError

    def put_criteria(self, record: CriteriaRecord) -> None:
        """Store (or replace) a record under its key."""
        raise NotImplementedError

    def delete_criteria(self, key: str) -> bool:
        """Delete the record under ``key``; True if there was one."""
        raise NotImplementedError

    def criteria_records(self) -> Iterator[CriteriaRecord]:
        """Every criteria record, oldest first (ties by key)."""
        raise NotImplementedError

    def find_criteria(self, prefix: str, limit: int = 2) -> list[CriteriaRecord]:
        """Up to ``limit`` records whose key starts with ``prefix``."""
        raise NotImplementedError

    # ---- judgments -------------------------------------------------------------------------------
    def get_judgment(self, key: str) -> dict[str, Any] | None:
        """The judgment record (``cerm.io.judgment_record``) under ``key``, or None."""
        raise NotImplementedError

    def put_judgment(self, key: str, record: dict[str, Any]) -> None:
        """Store a judgment record under ``key``."""
        raise NotImplementedError

    def count_judgments(self) -> int:
        """How many judgments are stored."""
        raise NotImplementedError

    # ---- leases: each store implements these four primitives atomically ------------------------------
    def _take_lease(self, key: str, holder: str, ttl_s: float) -> str | None:
        """Drop an expired lease on ``key``, take it for ``holder`` when free; return the holder now."""
        raise NotImplementedError

    def _drop_lease(self, key: str, holder: str) -> None:
        """Delete the lease on ``key`` if ``holder`` holds it."""
        raise NotImplementedError

    def _renew_leases(self, held: dict[str, str], ttl_s: float) -> set[str]:
        """Extend each lease still held by its holder; return the keys lost (expired and taken over)."""
        raise NotImplementedError

    def lease_holder(self, key: str) -> str | None:
        """Who holds the lease on ``key`` (expired or not), or None."""
        raise NotImplementedError

    def close(self) -> None:
        """Release this process's leases and close connections."""
        self.release_all()

    # ---- the lease, the same for every store ---------------------------------------------------------
    def _init_leases(self, lease_ttl_s: float) -> None:
        if lease_ttl_s <= 0:
            raise ValueError(f"lease_ttl_s ({lease_ttl_s}) must be > 0.")
        self.lease_ttl_s = lease_ttl_s
        self._held: dict[str, str] = {}
        self._held_lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        _STORES.add(self)

    def lease(self, key: str, holder: str) -> bool:
        """Take the right to generate ``key``'s criteria; True when ``holder`` holds it now.

        A free or expired lease is taken; so is one whose holder is gone from this host. The store renews
        it until ``release`` (or this process exits).
        """
        current = self._take_lease(key, holder, self.lease_ttl_s)
        if current is not None and current != holder and is_gone(current):
            logger.info("criteria lease %s: holder %s is gone; taking it over", key[:12], current)
            self._drop_lease(key, current)
            current = self._take_lease(key, holder, self.lease_ttl_s)
        if current != holder:
            return False
        with self._held_lock:
            self._held[key] = holder
            if self._renewer is None:
                self._renewer = threading.Thread(target=_renew_loop, args=(weakref.ref(self),), daemon=True,
                                                 name="cerm-lease-renewer")
                self._renewer.start()
        return True

    def release(self, key: str, holder: str) -> None:
        """Give up ``holder``'s lease on ``key`` (after storing the criteria, or after failing to)."""
        with self._held_lock:
            if self._held.get(key) == holder:
                del self._held[key]
        self._drop_lease(key, holder)

    def release_all(self) -> int:
        """Release every lease this process holds in this store (on exit, SIGTERM, SIGINT); how many."""
        with self._held_lock:
            mine = {k: h for k, h in self._held.items() if held_by_this_process(h)}
            self._held.clear()
        for key, holder in mine.items():
            self._drop_lease(key, holder)
        return len(mine)

    def held_leases(self) -> dict[str, str]:
        """The leases this store is renewing: key -> holder."""
        with self._held_lock:
            return dict(self._held)


def _renew_loop(ref: weakref.ref[Store]) -> None:
    """Renew a store's held leases every ``lease_ttl_s / RENEWALS_PER_TTL`` until it holds none."""
    while True:
        store = ref()
        if store is None:
            return
        with store._held_lock:
            if not store._held:
                store._renewer = None  # decided under the lock: a new lease starts a new renewer
                return
        interval = store.lease_ttl_s / RENEWALS_PER_TTL
        del store  # no strong reference while asleep: a dropped store stops its renewer
        time.sleep(interval)
        store = ref()
        if store is None:
            return
        held = store.held_leases()
        try:
            lost = store._renew_leases(held, store.lease_ttl_s) if held else set()
        except Exception as e:  # noqa: BLE001 - the renewer outlives one failed renewal (a busy file, a blip)
            logger.warning("renewing criteria leases in %s failed (retried): %s", store.location, e)
            lost = set()
        with store._held_lock:
            for key in lost:
                if store._held.get(key) == held[key]:
                    del store._held[key]
                    logger.warning("criteria lease %s expired while held (another process may generate it "
                                   "too; harmless)", key[:12])
        del store


def release_all_leases() -> int:
    """Release every lease this process holds, in every open store; how many."""
    released = 0
    for store in list(_STORES):
        try:
            released += store.release_all()
        except Exception as e:  # noqa: BLE001 - one unreachable store must not keep the others' leases
            logger.warning("releasing criteria leases in %s failed: %s (they expire by themselves)",
                           store.location, e)
    return released


def _forget_in_child() -> None:
    """A forked child holds none of its parent's leases (and has no renewer thread)."""
    for store in list(_STORES):
        store._held_lock = threading.Lock()
        store._held = {}
        store._renewer = None


atexit.register(release_all_leases)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)

__all__ = ["LEASE_TTL_S", "Store", "release_all_leases"]
