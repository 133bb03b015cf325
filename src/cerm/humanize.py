"""Numbers as people read them in tables and summaries (pure; shared by the suite's summary and its page)."""

from __future__ import annotations

from typing import Any


def duration(seconds: Any) -> str:
    """Seconds as a short human duration ("4 min 07 s"); a dash when not a number."""
    if not isinstance(seconds, (int, float)):
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def count(n: Any) -> str:
    """A count, short ("1.2M", "35K") or with thousands separators; a dash when not a number."""
    if not isinstance(n, (int, float)):
        return "–"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e4:
        return f"{n / 1e3:.0f}K"
    return f"{int(n):,}"
