"""Persistent content-hash caches for criteria and judgments in one SQLite file.

WAL mode plus a busy timeout makes one file safe for concurrent readers and writers across threads and
processes (a benchmark run, a reward server and a `cerm criteria edit` may share it). Each thread gets its
own connection because sqlite3 connections are not shareable across threads.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cerm.io import DataError, judgment_from_record, judgment_record, read_models
from cerm.types import Criteria, Criterion, Judgment

_SCHEMA = """
CREATE TABLE IF NOT EXISTS criteria (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    decoding TEXT NOT NULL,
    query TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    seconds REAL NOT NULL,
    is_edited INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS criteria_leases (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS judgments (
    key TEXT PRIMARY KEY,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


def content_key(**parts: Any) -> str:
    """sha256 over a canonical JSON of the named parts; the same inputs give the same key anywhere."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CriteriaRecord(BaseModel):
    """One cached criteria generation, as stored and as exported to JSONL."""

    key: str
    model: str
    prompt_version: str
    decoding: dict[str, Any]
    query: str
    sample_index: int = 0
    text: str
    finish_reason: str = "stop"
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    is_edited: bool = False
    created_at: float = 0.0


class Store:
    """The SQLite file behind both caches. ``path=None`` keeps everything in memory (one process)."""

    def __init__(self, path: str | Path | None = None, timeout_s: float = 60.0) -> None:
        self.path = str(Path(path).expanduser()) if path is not None else None  # "~/.cache/..." is the home dir
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._memory_lock = threading.Lock()
        if self.path is not None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        else:
            # one shared in-memory connection; sqlite3 serialises it with our lock
            self._memory = sqlite3.connect(":memory:", check_same_thread=False)
            self._memory.executescript(_SCHEMA)
        if self.path is not None:
            with self._conn() as conn:
                conn.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        if self.path is None:
            return self._memory
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
            self._local.conn = conn
        return conn

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one SQL statement and return its rows; a write is committed at once."""
        if self.path is None:
            with self._memory_lock:
                rows = self._memory.execute(sql, args).fetchall()
                if self._memory.in_transaction:  # a write; a SELECT opens none and needs no commit
                    self._memory.commit()
                return rows
        return self._conn().execute(sql, args).fetchall()


class CriteriaCache:
    """Criteria keyed by (model, prompt version, decoding, query, sample index)."""

    _COLUMNS = (
        "key, model, prompt_version, decoding, query, sample_index, text, finish_reason, "
        "tokens_in, tokens_out, seconds, is_edited, created_at"
    )

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, key: str) -> CriteriaRecord | None:
        """The criteria record stored under ``key``, or None."""
        rows = self.store.execute(f"SELECT {self._COLUMNS} FROM criteria WHERE key = ?", (key,))
        return self._record(rows[0]) if rows else None

    def put(self, record: CriteriaRecord) -> None:
        """Store (or replace) a criteria record under its key."""
        r = record.model_copy(update={"created_at": record.created_at or time.time()})
        self.store.execute(
            f"INSERT OR REPLACE INTO criteria ({self._COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                r.key, r.model, r.prompt_version, json.dumps(r.decoding, sort_keys=True), r.query,
                r.sample_index, r.text, r.finish_reason, r.tokens_in, r.tokens_out, r.seconds,
                int(r.is_edited), r.created_at,
            ),
        )

    def lease(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take the right to generate ``key``'s criteria (single flight across the processes sharing the file).

        True when ``owner`` holds the lease now; an expired lease (its holder died) is taken over. Each
        statement is atomic in SQLite, so two processes never both hold one key.
        """
        now = time.time()
        self.store.execute("DELETE FROM criteria_leases WHERE key = ? AND expires_at < ?", (key, now))
        self.store.execute("INSERT OR IGNORE INTO criteria_leases (key, owner, expires_at) VALUES (?, ?, ?)",
                           (key, owner, now + ttl_s))
        rows = self.store.execute("SELECT owner FROM criteria_leases WHERE key = ?", (key,))
        return bool(rows) and rows[0][0] == owner

    def release(self, key: str, owner: str) -> None:
        """Give up ``owner``'s lease on ``key`` (after storing the criteria, or after failing to)."""
        self.store.execute("DELETE FROM criteria_leases WHERE key = ? AND owner = ?", (key, owner))

    def delete(self, key: str) -> bool:
        """Delete the record under ``key``; True if there was one."""
        existed = self.get(key) is not None
        self.store.execute("DELETE FROM criteria WHERE key = ?", (key,))
        return existed

    def records(self) -> Iterator[CriteriaRecord]:
        """Every stored criteria record, oldest first."""
        for row in self.store.execute(f"SELECT {self._COLUMNS} FROM criteria ORDER BY created_at, key"):
            yield self._record(row)

    def find(self, prefix: str) -> CriteriaRecord:
        """The one record whose key starts with ``prefix`` (as git resolves short hashes)."""
        rows = self.store.execute(  # substr, not LIKE: a "%" or "_" in the prefix is no wildcard
            f"SELECT {self._COLUMNS} FROM criteria WHERE substr(key, 1, ?) = ? LIMIT 2", (len(prefix), prefix)
        )
        if not rows:
            raise KeyError(f"no cached criteria with key {prefix!r}; `cerm criteria list` shows the keys.")
        if len(rows) > 1:
            raise KeyError(f"criteria key prefix {prefix!r} matches several entries; give more characters.")
        return self._record(rows[0])

    def export_jsonl(self, path: str | Path) -> int:
        """Write every record to ``path`` as JSONL; returns the number written."""
        n = 0
        with open(path, "w", encoding="utf-8") as f:
            for record in self.records():
                f.write(record.model_dump_json() + "\n")
                n += 1
        return n

    def import_jsonl(self, path: str | Path) -> int:
        """Load records; an entry whose text differs from the cached one is marked edited."""
        records = []
        for _, record in read_models(path, CriteriaRecord):
            old = self.get(record.key)
            if old is not None and old.text != record.text:
                record = record.model_copy(update={"is_edited": True})
            records.append(record)
        if not records:
            raise DataError.at(str(path), None, "no criteria records; export some with `cerm criteria export`.")
        for record in records:
            self.put(record)
        return len(records)

    def _record(self, row: tuple[Any, ...]) -> CriteriaRecord:
        names = [c.strip() for c in self._COLUMNS.split(",")]
        data = dict(zip(names, row))
        data["decoding"] = json.loads(data["decoding"])
        data["is_edited"] = bool(data["is_edited"])
        return CriteriaRecord.model_validate(data)


class JudgmentCache:
    """Single judgments (one evaluation sample) keyed by a content hash; makes runs resumable."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, key: str) -> Judgment | None:
        """The judgment cached under ``key``, or None."""
        rows = self.store.execute("SELECT payload FROM judgments WHERE key = ?", (key,))
        return judgment_from_record(json.loads(rows[0][0])) if rows else None

    def put(self, key: str, judgment: Judgment) -> None:
        """Cache ``judgment`` under ``key``."""
        self.store.execute(
            "INSERT OR REPLACE INTO judgments (key, payload, created_at) VALUES (?,?,?)",
            (key, json.dumps(judgment_record(judgment)), time.time()),
        )

    def __len__(self) -> int:
        return int(self.store.execute("SELECT COUNT(*) FROM judgments")[0][0])


def criteria_from_record(record: CriteriaRecord, items: tuple[Criterion, ...], warning: str | None) -> Criteria:
    """A ``Criteria`` rebuilt from a cache record and its parsed items."""
    return Criteria(
        text=record.text, items=items, key=record.key, source="cache", parse_warning=warning,
        finish_reason=record.finish_reason,  # type: ignore[arg-type]
        tokens_in=record.tokens_in, tokens_out=record.tokens_out, seconds=record.seconds,
    )
