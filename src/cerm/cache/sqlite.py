"""The default store: one SQLite file (or memory) for criteria, judgments and criteria leases.

WAL mode plus a busy timeout makes one file safe for concurrent readers and writers across threads and
processes on one host (a benchmark run, a reward server and a `cerm criteria edit` may share it). Each
thread gets its own connection because sqlite3 connections are not shareable across threads. SQLite over
a network filesystem is not safe: replicas on several hosts share a Redis store (``cerm.cache.redis``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from typing_extensions import override

from cerm.cache.records import CriteriaRecord
from cerm.cache.store import LEASE_TTL_S, Store
from cerm.io import WriteError

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

_COLUMNS = ("key, model, prompt_version, decoding, query, sample_index, text, finish_reason, "
            "tokens_in, tokens_out, seconds, is_edited, created_at")
_NAMES = [c.strip() for c in _COLUMNS.split(",")]
# result codes meaning "this file cannot be written now" (a full disk above all); others propagate as they are
_WRITE_FAILURES = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN")


class SQLiteStore(Store):
    """The SQLite file behind both caches. ``path=None`` keeps everything in memory (one process)."""

    def __init__(self, path: str | Path | None = None, timeout_s: float = 60.0,
                 lease_ttl_s: float = LEASE_TTL_S) -> None:
        self.path = str(Path(path).expanduser()) if path is not None else None  # "~/.cache/..." is the home dir
        self.location = self.path or ":memory:"
        self.timeout_s = timeout_s
        self._init_leases(lease_ttl_s)
        self._local = threading.local()
        self._memory_lock = threading.Lock()
        if self.path is not None:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise WriteError(str(Path(self.path).parent), e.strerror or str(e)) from None
        else:
            # one shared in-memory connection; sqlite3 serialises it with our lock
            self._memory = sqlite3.connect(":memory:", check_same_thread=False)
            self._memory.executescript(_SCHEMA)
        if self.path is not None:
            try:
                with self._conn() as conn:
                    conn.executescript(_SCHEMA)
            except sqlite3.Error as e:
                raise self._failure(e) from None

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

    def _failure(self, e: sqlite3.Error) -> Exception:
        """A ``WriteError`` naming the file when ``e`` means it cannot be written (full disk), else ``e``."""
        name = getattr(e, "sqlite_errorname", "")
        if name.startswith(_WRITE_FAILURES) or "disk is full" in str(e):
            return WriteError(self.location, f"SQLite: {e}")
        return e

    def _run(self, sql: str, args: tuple[Any, ...]) -> tuple[list[tuple[Any, ...]], int]:
        """(rows, rows changed) of one statement; a write is committed at once."""
        if self.path is None:
            with self._memory_lock:
                cur = self._memory.execute(sql, args)
                rows = cur.fetchall()
                if self._memory.in_transaction:  # a write; a SELECT opens none and needs no commit
                    self._memory.commit()
                return rows, cur.rowcount
        try:
            cur = self._conn().execute(sql, args)
            return cur.fetchall(), cur.rowcount
        except sqlite3.Error as e:
            raise self._failure(e) from None

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one SQL statement and return its rows; a write is committed at once."""
        return self._run(sql, args)[0]

    def _write(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        """Run one writing statement; the number of rows it changed."""
        return self._run(sql, args)[1]

    # ---- criteria --------------------------------------------------------------------------------
    @override
    def get_criteria(self, key: str) -> CriteriaRecord | None:
        rows = self.execute(f"SELECT {_COLUMNS} FROM criteria WHERE key = ?", (key,))
        return _record(rows[0]) if rows else None

    @override
    def put_criteria(self, record: CriteriaRecord) -> None:
        r = record.model_copy(update={"created_at": record.created_at or time.time()})
        self._write(
            f"INSERT OR REPLACE INTO criteria ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                r.key, r.model, r.prompt_version, json.dumps(r.decoding, sort_keys=True), r.query,
                r.sample_index, r.text, r.finish_reason, r.tokens_in, r.tokens_out, r.seconds,
                int(r.is_edited), r.created_at,
            ),
        )

    @override
    def delete_criteria(self, key: str) -> bool:
        return self._write("DELETE FROM criteria WHERE key = ?", (key,)) > 0

    @override
    def criteria_records(self) -> Iterator[CriteriaRecord]:
        for row in self.execute(f"SELECT {_COLUMNS} FROM criteria ORDER BY created_at, key"):
            yield _record(row)

    @override
    def find_criteria(self, prefix: str, limit: int = 2) -> list[CriteriaRecord]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self.execute(f"SELECT {_COLUMNS} FROM criteria WHERE key LIKE ? ESCAPE '\\' LIMIT ?",
                            (escaped + "%", limit))
        return [_record(r) for r in rows]

    # ---- judgments -------------------------------------------------------------------------------
    @override
    def get_judgment(self, key: str) -> dict[str, Any] | None:
        rows = self.execute("SELECT payload FROM judgments WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    @override
    def put_judgment(self, key: str, record: dict[str, Any]) -> None:
        self._write("INSERT OR REPLACE INTO judgments (key, payload, created_at) VALUES (?,?,?)",
                    (key, json.dumps(record), time.time()))

    @override
    def count_judgments(self) -> int:
        return int(self.execute("SELECT COUNT(*) FROM judgments")[0][0])

    # ---- leases: each statement is atomic in SQLite, so two processes never both hold one key ----------
    @override
    def _take_lease(self, key: str, holder: str, ttl_s: float) -> str | None:
        now = time.time()
        self._write("DELETE FROM criteria_leases WHERE key = ? AND expires_at < ?", (key, now))
        self._write("INSERT OR IGNORE INTO criteria_leases (key, owner, expires_at) VALUES (?, ?, ?)",
                    (key, holder, now + ttl_s))
        return self.lease_holder(key)

    @override
    def _drop_lease(self, key: str, holder: str) -> None:
        self._write("DELETE FROM criteria_leases WHERE key = ? AND owner = ?", (key, holder))

    @override
    def _renew_leases(self, held: dict[str, str], ttl_s: float) -> set[str]:
        expires = time.time() + ttl_s
        return {key for key, holder in held.items()
                if not self._write("UPDATE criteria_leases SET expires_at = ? WHERE key = ? AND owner = ?",
                                   (expires, key, holder))}

    @override
    def lease_holder(self, key: str) -> str | None:
        rows = self.execute("SELECT owner FROM criteria_leases WHERE key = ?", (key,))
        return rows[0][0] if rows else None


def _record(row: tuple[Any, ...]) -> CriteriaRecord:
    data = dict(zip(_NAMES, row))
    data["decoding"] = json.loads(data["decoding"])
    data["is_edited"] = bool(data["is_edited"])
    return CriteriaRecord.model_validate(data)
