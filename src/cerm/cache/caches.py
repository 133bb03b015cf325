"""The two caches over any ``Store``: criteria (with the single-flight lease) and single judgments."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cerm.cache.records import CriteriaRecord
from cerm.cache.store import Store
from cerm.io import DataError, judgment_from_record, judgment_record, read_models
from cerm.types import Judgment


class CriteriaCache:
    """Criteria keyed by (model, prompt version, decoding, query, sample index)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, key: str) -> CriteriaRecord | None:
        """The criteria record stored under ``key``, or None."""
        return self.store.get_criteria(key)

    def put(self, record: CriteriaRecord) -> None:
        """Store (or replace) a criteria record under its key."""
        self.store.put_criteria(record)

    def lease(self, key: str, owner: str) -> bool:
        """Take the right to generate ``key``'s criteria (single flight across the processes sharing the
        store); True when ``owner`` (``cerm.cache.new_holder_id()``) holds it now. The store renews it until
        ``release``; a lease whose holder is gone is taken over (``cerm.cache.store``).
        """
        return self.store.lease(key, owner)

    def release(self, key: str, owner: str) -> None:
        """Give up ``owner``'s lease on ``key`` (after storing the criteria, or after failing to)."""
        self.store.release(key, owner)

    def delete(self, key: str) -> bool:
        """Delete the record under ``key``; True if there was one."""
        return self.store.delete_criteria(key)

    def records(self) -> Iterator[CriteriaRecord]:
        """Every stored criteria record, oldest first."""
        return self.store.criteria_records()

    def find(self, prefix: str) -> CriteriaRecord:
        """The one record whose key starts with ``prefix`` (as git resolves short hashes)."""
        found = self.store.find_criteria(prefix, limit=2)
        if not found:
            raise KeyError(f"no cached criteria with key {prefix!r}; `cerm criteria list` shows the keys.")
        if len(found) > 1:
            raise KeyError(f"criteria key prefix {prefix!r} matches several entries; give more characters.")
        return found[0]

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


class JudgmentCache:
    """Single judgments (one evaluation sample) keyed by a content hash; makes runs resumable."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, key: str) -> Judgment | None:
        """The judgment cached under ``key``, or None."""
        record = self.store.get_judgment(key)
        return judgment_from_record(record) if record is not None else None

    def put(self, key: str, judgment: Judgment) -> None:
        """Cache ``judgment`` under ``key``."""
        self.store.put_judgment(key, judgment_record(judgment))

    def __len__(self) -> int:
        return self.store.count_judgments()
