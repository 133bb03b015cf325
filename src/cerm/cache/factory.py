"""Pick the store for a path or URL: a SQLite file (the default) or a Redis server (``redis://``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cerm.cache.store import Store

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(target: object) -> bool:
    """True for ``redis://host:port/db`` (also ``rediss://`` for TLS, ``unix://`` for a socket)."""
    return isinstance(target, str) and target.startswith(REDIS_SCHEMES)


def store_class(target: object) -> type[Store]:
    """The ``Store`` implementation for ``target`` (None or a path: SQLite; a Redis URL: Redis)."""
    if is_redis_url(target):
        from cerm.cache.redis import RedisStore

        return RedisStore
    if isinstance(target, Path) and str(target).startswith(("redis:", "rediss:")):
        raise ValueError(f"{target}: a Redis URL passed as a path (the '//' was lost); pass it as a string, "
                         "e.g. 'redis://host:6379/0'.")
    from cerm.cache.sqlite import SQLiteStore

    return SQLiteStore


def open_store(target: str | Path | None, **options: Any) -> Store:
    """The store at ``target``: ``None`` (in memory), a SQLite file path, or ``redis://host:port/db``."""
    return Store(target, **options)
