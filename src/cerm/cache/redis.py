"""A Redis store: criteria, judgments and criteria leases shared by replicas on several hosts.

Selected by ``Store("redis://host:port/db")`` (``--cache redis://...``). Every key lives under the
``cerm:`` prefix, so a database may be shared with other programs:

- ``cerm:criteria`` (hash key -> record JSON), ``cerm:criteria:order`` (sorted by creation time) and
  ``cerm:criteria:lex`` (sorted by key, for prefix look-ups);
- ``cerm:judgments`` (hash key -> judgment record JSON);
- ``cerm:lease:<key>``: the holder id, set with ``SET NX PX`` (atomic set-if-absent with expiry), renewed and
  released only by its holder (a compare-and-set script), so a crashed holder's lease expires by itself.

Expiry runs on the Redis server's clock, so the hosts' clocks need not agree.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

from typing_extensions import override

from cerm.cache.records import CriteriaRecord
from cerm.cache.store import LEASE_TTL_S, Store
from cerm.io import WriteError

try:
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry
except ImportError as e:  # pragma: no cover - exercised by the extra-less install test
    raise ImportError(f"a redis:// cache needs the Redis client: pip install 'cerm[redis]' ({e})") from None

_PREFIX = "cerm:"
_CRITERIA, _ORDER, _LEX = f"{_PREFIX}criteria", f"{_PREFIX}criteria:order", f"{_PREFIX}criteria:lex"
_JUDGMENTS = f"{_PREFIX}judgments"
_BATCH = 500  # records per HMGET when listing

# compare-and-set: only the holder renews or deletes its lease
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_DROP = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def _lease_key(key: str) -> str:
    return f"{_PREFIX}lease:{key}"


class RedisStore(Store):
    """The store on a Redis server at ``url`` (``redis://[:password@]host:port/db``, ``rediss://`` for TLS).

    Args:
        url: the server and database.
        timeout_s: per-command socket timeout; a command that fails is retried three times with backoff.
        lease_ttl_s: how long a criteria lease lives without renewal (``cerm.cache.store``).
    """

    def __init__(self, url: str, timeout_s: float = 10.0, lease_ttl_s: float = LEASE_TTL_S) -> None:
        self.url = url
        self.location = _redact(url)
        self._init_leases(lease_ttl_s)
        try:
            self._redis = redis.Redis.from_url(
                url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
                retry_on_error=[redis.ConnectionError, redis.TimeoutError], health_check_interval=30)
            self._redis.ping()
        except (ValueError, redis.RedisError) as e:
            raise ConnectionError(f"Redis store {self.location} unreachable ({type(e).__name__}: {e}); start "
                                  "it (redis-server --port 6379) or fix --cache redis://HOST:PORT/DB.") from None
        self._renew = self._redis.register_script(_RENEW)
        self._drop = self._redis.register_script(_DROP)

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """A Redis failure (out of memory, unreachable after retries) as a ``WriteError`` naming the store."""
        try:
            yield
        except redis.OutOfMemoryError as e:
            raise WriteError(self.location, f"Redis is out of memory (maxmemory): {e}", action) from None
        except redis.RedisError as e:
            raise WriteError(self.location, f"Redis: {type(e).__name__}: {e}", action) from None

    # ---- criteria --------------------------------------------------------------------------------
    @override
    def get_criteria(self, key: str) -> CriteriaRecord | None:
        with self._errors("read"):
            raw = self._redis.hget(_CRITERIA, key)
        return CriteriaRecord.model_validate_json(raw) if raw is not None else None

    @override
    def put_criteria(self, record: CriteriaRecord) -> None:
        r = record.model_copy(update={"created_at": record.created_at or time.time()})
        with self._errors("write"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(_CRITERIA, r.key, r.model_dump_json())
            pipe.zadd(_ORDER, {r.key: r.created_at})
            pipe.zadd(_LEX, {r.key: 0})
            pipe.execute()

    @override
    def delete_criteria(self, key: str) -> bool:
        with self._errors("write"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(_CRITERIA, key)
            pipe.zrem(_ORDER, key)
            pipe.zrem(_LEX, key)
            return bool(pipe.execute()[0])

    @override
    def criteria_records(self) -> Iterator[CriteriaRecord]:
        with self._errors("read"):
            keys: list[str] = self._redis.zrange(_ORDER, 0, -1)  # type: ignore[assignment]
        for start in range(0, len(keys), _BATCH):
            with self._errors("read"):
                raws: list[str | None] = self._redis.hmget(_CRITERIA, keys[start:start + _BATCH])  # type: ignore[assignment]
            for raw in raws:
                if raw is not None:  # deleted since the listing
                    yield CriteriaRecord.model_validate_json(raw)

    @override
    def find_criteria(self, prefix: str, limit: int = 2) -> list[CriteriaRecord]:
        with self._errors("read"):
            # keys sort bytewise: the ones with the prefix come first from "[prefix" on
            keys: list[str] = self._redis.zrangebylex(_LEX, f"[{prefix}", "+", 0, limit)  # type: ignore[assignment]
        found = [self.get_criteria(k) for k in keys if k.startswith(prefix)]
        return [r for r in found if r is not None]

    # ---- judgments -------------------------------------------------------------------------------
    @override
    def get_judgment(self, key: str) -> dict[str, Any] | None:
        with self._errors("read"):
            raw = self._redis.hget(_JUDGMENTS, key)
        return json.loads(raw) if raw is not None else None

    @override
    def put_judgment(self, key: str, record: dict[str, Any]) -> None:
        with self._errors("write"):
            self._redis.hset(_JUDGMENTS, key, json.dumps(record))

    @override
    def count_judgments(self) -> int:
        with self._errors("read"):
            return int(self._redis.hlen(_JUDGMENTS))

    # ---- leases ------------------------------------------------------------------------------------
    @override
    def _take_lease(self, key: str, holder: str, ttl_s: float) -> str | None:
        with self._errors("write"):
            if self._redis.set(_lease_key(key), holder, nx=True, px=max(1, int(ttl_s * 1000))):
                return holder
            return self._redis.get(_lease_key(key))  # type: ignore[return-value]

    @override
    def _drop_lease(self, key: str, holder: str) -> None:
        with self._errors("write"):
            self._drop(keys=[_lease_key(key)], args=[holder])

    @override
    def _renew_leases(self, held: dict[str, str], ttl_s: float) -> set[str]:
        ttl_ms = max(1, int(ttl_s * 1000))
        with self._errors("write"):
            pipe = self._redis.pipeline(transaction=False)
            for key, holder in held.items():
                self._renew(keys=[_lease_key(key)], args=[holder, ttl_ms], client=pipe)
            results = pipe.execute()
        return {key for key, ok in zip(held, results) if not ok}

    @override
    def lease_holder(self, key: str) -> str | None:
        with self._errors("read"):
            return self._redis.get(_lease_key(key))  # type: ignore[return-value]

    @override
    def close(self) -> None:
        super().close()
        self._redis.close()


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user + ':' if user else ''}***@{host}"
