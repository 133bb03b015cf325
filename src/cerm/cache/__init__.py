"""Persistent content-hash caches for criteria and judgments, and the criteria single-flight lease.

``Store(path)`` is a SQLite file (the default; ``None`` = in memory), ``Store("redis://host:port/db")`` a
Redis server shared by replicas on several hosts; ``CriteriaCache`` and ``JudgmentCache`` work over either.
Modules: ``records`` (keys, records), ``store`` (the interface and the lease), ``holder`` (lease holders and
their liveness), ``sqlite``, ``redis``, ``caches``, ``factory``.

May import: the core (``cerm.types``, ``cerm.io``); the ``redis`` client only inside ``cerm.cache.redis``.
"""

from cerm.cache.caches import CriteriaCache, JudgmentCache
from cerm.cache.factory import is_redis_url, open_store
from cerm.cache.holder import new_holder_id
from cerm.cache.records import CriteriaRecord, content_key, criteria_from_record
from cerm.cache.sqlite import SQLiteStore
from cerm.cache.store import LEASE_TTL_S, Store, release_all_leases

__all__ = [
    "LEASE_TTL_S", "CriteriaCache", "CriteriaRecord", "JudgmentCache", "SQLiteStore", "Store", "content_key",
    "criteria_from_record", "is_redis_url", "new_holder_id", "open_store", "release_all_leases",
]
