"""What ``cerm view`` shows, as pure functions from run records to JSON-ready dicts.

An *item view* is one query with its criteria and every candidate's judgment; an *index row* is the few
fields the item list filters on. The index of a whole run loads at once (an 18K-item RMB run stays a few
MB); item views are written in chunks that the page loads on demand.

Every record field is read with ``.get``: runs written before a field existed (judgment texts, flags,
expected scores) still open, showing what they have.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cerm.parsing import find_boxes

PREVIEW_CHARS = 160
_OTHER_POINTS_RE = re.compile(r"other\s+points?", re.IGNORECASE)
_BOX = "\\boxed{"
_FLAG_PREFIX = "is_"  # judgment fields that are flags when true (is_off_grid, is_response_truncated)

Score = float | None


# ---- per-item verdicts [R] -------------------------------------------------------------------
def verdict(scores: Sequence[Score], correct: Sequence[int]) -> str:
    """The viewer's per-item verdict [R] over every (correct, incorrect) candidate pair.

    ``correct``/``wrong``/``tie``: every pair ranked right / wrong / equal; ``mixed``: some of each
    (RM-Bench's 3x3 grid); ``failed``: a score in some pair is missing; ``unlabelled``: no such pair.
    Official metrics differ per benchmark (summary.json has them); this only sorts items for reading.
    """
    bad = [i for i in range(len(scores)) if i not in correct]
    pairs = [(scores[g], scores[b]) for g in correct for b in bad]
    if not pairs:
        return "unlabelled"
    if any(a is None or b is None for a, b in pairs):
        return "failed"
    wins = sum(a > b for a, b in pairs)  # type: ignore[operator]
    losses = sum(a < b for a, b in pairs)  # type: ignore[operator]
    if wins == len(pairs):
        return "correct"
    if losses == len(pairs):
        return "wrong"
    if wins == losses == 0:
        return "tie"
    return "mixed"


def score_gap(scores: Sequence[Score], correct: Sequence[int]) -> float | None:
    """Mean valid score of the correct candidates minus that of the others; without labels the spread
    (max − min) of the valid scores. None when a side has no valid score.
    """
    valid = [(i, s) for i, s in enumerate(scores) if s is not None]
    if not correct or len(correct) == len(scores):
        values = [s for _, s in valid]
        return max(values) - min(values) if len(values) > 1 else None
    good = [s for i, s in valid if i in correct]
    bad = [s for i, s in valid if i not in correct]
    if not good or not bad:
        return None
    return round(sum(good) / len(good) - sum(bad) / len(bad), 4)


# ---- judgment text ---------------------------------------------------------------------------
def box_spans(text: str) -> list[dict[str, Any]]:
    r"""Where the scores sit in a judgment text: each ``\boxed{}`` as {start, end, kind, value, n}.

    ``kind`` is ``overall`` (the last box, the one scored), ``other`` (the first box after the last
    "Other Point(s)" mention, as the parser reads it) or ``criterion`` (``n`` counts these from 0, in
    the order of ``criterion_scores``). ``value`` is the box content as written.
    """
    boxes = find_boxes(text or "")
    if not boxes:
        return []
    mentions = [m.start() for m in _OTHER_POINTS_RE.finditer(text)]
    other = None
    if mentions:
        other = next((i for i, (pos, _) in enumerate(boxes[:-1]) if pos > mentions[-1]), None)
    spans, n = [], 0
    for i, (pos, content) in enumerate(boxes):
        end = pos + len(_BOX) + len(content) + 1 if content is not None else len(text)
        if i == len(boxes) - 1:
            kind, k = "overall", None
        elif i == other:
            kind, k = "other", None
        else:
            kind, k = "criterion", n
            n += 1
        spans.append({"start": pos, "end": end, "kind": kind, "value": content, "n": k})
    return spans


def flags(judgment: Mapping[str, Any]) -> list[str]:
    """Names of the judgment's raised flags: true ``is_*`` fields (``is_off_grid`` -> ``off_grid``), a
    ``flags`` list or mapping, and the entries of ``*_flags`` lists (``injection_flags`` -> ``injection:x``).
    """
    out: list[str] = []
    for key, value in judgment.items():
        if key.startswith(_FLAG_PREFIX) and value is True and key != "is_correct":
            out.append(key[len(_FLAG_PREFIX):])
        elif key == "flags" and isinstance(value, Mapping):
            out += [str(k) for k, v in value.items() if v]
        elif key == "flags" and isinstance(value, (list, tuple)):
            out += [str(x) for x in value]
        elif key.endswith("_flags") and isinstance(value, (list, tuple)):
            out += [f"{key[:-len('_flags')]}:{x}" for x in value]
    return sorted(set(out))


GRID = tuple(k / 2 for k in range(21))  # the 0, 0.5, ..., 10 score grid


def distribution(judgment: Mapping[str, Any]) -> list[list[float]]:
    """The score distribution at the final box as sorted [score, probability] pairs (empty if absent).

    Reads ``score_probs`` (21 probabilities of the grid values 0, 0.5, ..., 10, as cerm's readout
    writes them), or a {score: p} mapping / a list of [score, p] or {score, p} entries under
    ``score_distribution`` or ``distribution``. Zero-probability grid values are left out.
    """
    probs = judgment.get("score_probs")
    if isinstance(probs, (list, tuple)) and len(probs) == len(GRID):
        try:
            return [[g, float(p)] for g, p in zip(GRID, probs) if float(p) > 0]
        except (TypeError, ValueError):
            return []
    raw = judgment.get("score_distribution", judgment.get("distribution"))
    pairs: list[list[float]] = []
    if isinstance(raw, Mapping):
        items: Iterable[Any] = raw.items()
    elif isinstance(raw, (list, tuple)):
        items = raw
    else:
        return []
    for entry in items:
        if isinstance(entry, Mapping):
            s, p = entry.get("score"), entry.get("p", entry.get("prob", entry.get("probability")))
        elif isinstance(entry, (list, tuple)) and len(entry) == 2:
            s, p = entry
        else:
            continue
        try:
            pairs.append([float(s), float(p)])  # type: ignore[arg-type]  # None raises TypeError: skipped
        except (TypeError, ValueError):
            continue
    return sorted(pairs)


def candidate_view(judgment: Mapping[str, Any], *, index: int, role: str, is_correct: bool | None,
                   response: Any) -> dict[str, Any]:
    """One candidate's card: its response, score, status, flags, costs and the judgment text with spans."""
    text = judgment.get("text", judgment.get("evaluation")) or ""  # bench records: text; score -o: evaluation
    return {
        "index": index, "role": role, "is_correct": is_correct, "response": response,
        "score": judgment.get("score"), "status": judgment.get("status", "ok"),
        "criterion_scores": list(judgment.get("criterion_scores") or []),
        "other_points_score": judgment.get("other_points_score"),
        "expected_score": judgment.get("expected_score"), "distribution": distribution(judgment),
        "score_entropy": judgment.get("score_entropy"),
        "score_std": judgment.get("score_std"), "evaluation": text, "spans": box_spans(text),
        "flags": flags(judgment), "error": judgment.get("error"), "attempts": judgment.get("attempts"),
        "tokens_in": judgment.get("tokens_in"), "tokens_out": judgment.get("tokens_out"),
        "seconds": judgment.get("seconds"), "criteria_key": judgment.get("criteria_key"),
    }


def criteria_view(c: Mapping[str, Any]) -> dict[str, Any]:
    """The viewer's form of one criteria record: its items and text."""
    items = [{"term": str(x.get("term", "")), "description": str(x.get("description", ""))}
             for x in c.get("items") or [] if isinstance(x, Mapping)]
    return {"key": c.get("key"), "source": c.get("source"), "text": c.get("text"), "items": items,
            "parse_warning": c.get("parse_warning"), "tokens_in": c.get("tokens_in"),
            "tokens_out": c.get("tokens_out"), "seconds": c.get("seconds")}


def _finish(item: dict[str, Any]) -> dict[str, Any]:
    scores = [c["score"] for c in item["candidates"]]
    correct = item.get("correct") or []
    item.setdefault("verdict", verdict(scores, correct))
    item.setdefault("gap", score_gap(scores, correct))
    return item


# ---- records -> item views -------------------------------------------------------------------
def item_from_bench(rec: Mapping[str, Any]) -> dict[str, Any]:
    """An item view from a ``cerm bench run`` items.jsonl record (cerm.bench.records)."""
    cands = rec.get("candidates") or []
    return _finish({
        "id": str(rec["id"]), "subset": rec.get("subset", ""), "mode": rec.get("mode"),
        "query": rec.get("prompt"), "correct": list(rec.get("correct") or []),
        "criteria": [criteria_view(c) for c in rec.get("criteria") or []],
        "candidates": [candidate_view(c, index=c.get("index", i), role=str(c.get("role", i)),
                                      is_correct=c.get("is_correct"), response=c.get("response"))
                       for i, c in enumerate(cands)],
        "meta": dict(rec.get("meta") or {}),
    })


def item_from_score(rec: Mapping[str, Any]) -> dict[str, Any]:
    """An item view from a ``cerm score -o`` or ``cerm bon -o`` line (unlabelled; BoN marks its pick)."""
    judgments = rec.get("judgments") or []
    responses = rec.get("responses") or []
    chosen = rec.get("chosen_index")
    tied = list(rec.get("tied") or [])
    cands = []
    for i, j in enumerate(judgments):
        role = "chosen" if i == chosen else ("tied" if len(tied) > 1 and i in tied else f"response {i}")
        cands.append(candidate_view(j, index=i, role=role, is_correct=None,
                                    response=responses[i] if i < len(responses) else None))
    crit = rec.get("criteria")
    item: dict[str, Any] = {
        "id": str(rec.get("id")), "subset": str(rec.get("subset", "")), "mode": "bon" if "chosen_index" in rec
        else "score", "query": rec.get("query"), "correct": [],
        "criteria": [criteria_view(c) for c in (crit if isinstance(crit, list) else [crit] if crit else [])],
        "candidates": cands, "meta": {k: rec[k] for k in ("model", "prompt_version", "tie_policy") if k in rec},
    }
    if "chosen_index" in rec:
        item["verdict"] = "failed" if chosen is None and not tied else ("tie" if len(tied) > 1 else "chosen")
        item["chosen"] = chosen
    elif any(c["score"] is None for c in cands):
        item["verdict"] = "failed"
    return _finish(item)


def item_from_probe(rec: Mapping[str, Any]) -> dict[str, Any]:
    """An item view from a ``cerm probe`` probe_items.jsonl record: original vs variant, one criteria set.

    Records from before texts were kept have only the two scores and statuses.
    """
    js = rec.get("judgments") or [
        {"score": rec.get("original_score"), "status": rec.get("original_status")},
        {"score": rec.get("variant_score"), "status": rec.get("variant_status")}]
    texts = [rec.get("original"), rec.get("variant")]
    cands = [candidate_view(j, index=i, role=("original", "variant")[i], is_correct=None, response=texts[i])
             for i, j in enumerate(js[:2])]
    a, b = (c["score"] for c in cands)
    shift = None if a is None or b is None else b - a
    item = {
        "id": f"{rec.get('probe')}:{rec.get('id')}", "subset": str(rec.get("probe", "")), "mode": "probe",
        "query": rec.get("prompt"), "correct": [],
        "criteria": [criteria_view(c) for c in rec.get("criteria") or []], "candidates": cands,
        "meta": {k: rec[k] for k in ("original_chars", "variant_chars") if k in rec},
        "gap": shift,
        "verdict": "failed" if shift is None else "up" if shift > 0 else "down" if shift < 0 else "equal",
    }
    return item


# ---- the list and the summary ----------------------------------------------------------------
def query_preview(query: Any, n: int = PREVIEW_CHARS) -> str:
    """The last user turn (or the string), whitespace collapsed, cut to ``n`` characters."""
    if isinstance(query, list):
        users = [m.get("content", "") for m in query if isinstance(m, Mapping) and m.get("role") == "user"]
        query = users[-1] if users else ""
    text = " ".join(str(query or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def index_row(item: Mapping[str, Any], n: int) -> dict[str, Any]:
    """What the item list shows and filters on; ``n`` is the item's position (its chunk = n // size)."""
    cands = item["candidates"]
    return {"n": n, "id": item["id"], "subset": item["subset"], "verdict": item["verdict"], "gap": item["gap"],
            "statuses": sorted({c["status"] for c in cands}), "scores": [c["score"] for c in cands],
            "flags": sorted({f for c in cands for f in c["flags"]}), "q": query_preview(item["query"])}


def counts(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts the viewer computes itself (every kind of run): verdicts, statuses, parse failures, flags."""
    statuses = Counter(c["status"] for it in items for c in it["candidates"])
    n_cands = sum(statuses.values())
    valid = [c["score"] for it in items for c in it["candidates"] if c["score"] is not None]
    return {"n_items": len(items), "n_candidates": n_cands,
            "verdicts": dict(Counter(it["verdict"] for it in items).most_common()),
            "statuses": dict(sorted(statuses.items())),
            "parse_failure_rate": (n_cands - len(valid)) / n_cands if n_cands else None,
            "mean_score": sum(valid) / len(valid) if valid else None,
            "flags": dict(Counter(f for it in items for c in it["candidates"] for f in c["flags"]).most_common()),
            "subsets": sorted({it["subset"] for it in items})}


def compare_rows(items_a: Sequence[Mapping[str, Any]], items_b: Sequence[Mapping[str, Any]]
                 ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Items whose verdict differs between run A and run B (shared ids, in A's order), and the tallies.

    Each row: id, subset, its position in each run (``n_a``, ``n_b``), both verdicts and score lists.
    """
    pos_b = {it["id"]: n for n, it in enumerate(items_b)}
    rows = []
    shared = 0
    for n_a, a in enumerate(items_a):
        n_b = pos_b.get(a["id"])
        if n_b is None:
            continue
        shared += 1
        b = items_b[n_b]
        if a["verdict"] != b["verdict"]:
            rows.append({"id": a["id"], "subset": a["subset"], "n_a": n_a, "n_b": n_b,
                         "verdict_a": a["verdict"], "verdict_b": b["verdict"],
                         "scores_a": [c["score"] for c in a["candidates"]],
                         "scores_b": [c["score"] for c in b["candidates"]]})
    return rows, {"shared": shared, "changed": len(rows), "only_a": len(items_a) - shared,
                  "only_b": len(items_b) - shared}
