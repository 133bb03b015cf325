"""``cerm distill``: SFT traces from a teacher judge (docs/training.md §2; the recipe is ours [R]).

For each preference pair the teacher (any backend, usually an OpenAI-compatible server with a strong model)
writes the criteria once, then an evaluation of the chosen and of the rejected response, with the CE-RM
prompts. A pair is kept only if both traces are clean (criteria finished with a parseable list, both
evaluations parsed) and the overall scores order it as labelled: ``score(chosen) - score(rejected) >
min_margin``. A kept pair yields two SFT rows, the exact two-turn conversations the judge sends
(``cerm.prompts.evaluation_messages``) plus the teacher's evaluation. They share the criteria turn, so it is
trained only in the chosen row (``train_criteria``).

Resumable: rows are appended and flushed per chunk, pairs already in the output are skipped, and the judge's
SQLite cache holds every teacher generation.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cerm.backends.embedded import embedded_warning
from cerm.io import read_output
from cerm.judge import Judge
from cerm.prompts import PROMPT_VERSION, evaluation_messages
from cerm.train.pairs import PreferencePair
from cerm.train.sft.data import SFTRow
from cerm.types import Criteria, Judgment, ScoredItem

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig:
    """``min_margin``: keep a pair iff score(chosen) - score(rejected) > min_margin (0 = strictly ordered)."""

    min_margin: float = 0.0
    chunk_pairs: int = 64  # pairs per teacher batch; rows are flushed after each chunk

    def __post_init__(self) -> None:
        if not 0 <= self.min_margin < 10:
            raise ValueError(f"min_margin ({self.min_margin}) must be in [0, 10).")
        if self.chunk_pairs < 1:
            raise ValueError(f"chunk_pairs ({self.chunk_pairs}) must be >= 1.")


@dataclass(frozen=True)
class DistillResult:
    """What a distill run did: pairs kept, skipped (already done) and rejected (by reason)."""

    kept: int  # pairs kept in this run (2 rows each)
    skipped: int  # pairs already in the output from an earlier run
    rejected: dict[str, int]  # reason -> pairs
    out_path: Path

    @property
    def judged(self) -> int:
        """Pairs judged in this run."""
        return self.kept + sum(self.rejected.values())


def rejection_reason(criteria: Criteria, chosen: Judgment, rejected: Judgment, min_margin: float) -> str | None:
    """Why a teacher trace is unusable for SFT, or None when it is kept."""
    if criteria.finish_reason != "stop":
        return f"criteria_{criteria.finish_reason}"
    if criteria.parse_warning is not None or not criteria.items:
        return "criteria_unparsed"
    for name, j in (("chosen", chosen), ("rejected", rejected)):
        if j.score is None:
            return f"{name}_{j.status.value}"
    assert chosen.score is not None and rejected.score is not None
    if chosen.score < rejected.score:
        return "misordered"
    if chosen.score == rejected.score:
        return "tie"
    if chosen.score - rejected.score <= min_margin:
        return "below_margin"
    return None


def sft_rows(pair: PreferencePair, criteria: Criteria, chosen: Judgment, rejected: Judgment,
             teacher: str) -> list[SFTRow]:
    """The pair's two conversations; only the chosen one trains the shared criteria turn [R]."""
    rows = []
    for role, response, j, other in (("chosen", pair.chosen, chosen, rejected),
                                     ("rejected", pair.rejected, rejected, chosen)):
        messages = evaluation_messages(pair.prompt_text, criteria.text, response)
        messages.append({"role": "assistant", "content": j.text})
        rows.append(SFTRow.model_validate({
            "id": f"{pair.id}:{role}", "pair_id": pair.id, "response_role": role, "messages": messages,
            "train_criteria": role == "chosen", "score": j.score, "partner_score": other.score,
            "teacher": teacher, "prompt_version": PROMPT_VERSION, "source": pair.source, "domain": pair.domain,
        }))
    return rows


def done_pair_ids(path: Path) -> set[str]:
    """Pair ids already written whole to ``path``.

    What an interrupted run left half-written (a last line
    without its newline, a pair with one row) is removed from the file, so that pair is redone.
    """
    if not path.exists():
        return set()
    # read_output cuts a torn last line; the other half of a pair is removed here
    records = read_output(path, required=("pair_id",), what="an SFT row; refusing to append to it").records
    rows = Counter(rec["pair_id"] for _, rec in records)
    whole = {pid for pid, n in rows.items() if n == 2}
    if len(whole) * 2 != len(records):
        logger.warning("%s: removing rows of pairs an interrupted run left half-written", path)
        lines = path.read_bytes().split(b"\n")  # the rows kept stay byte for byte as written
        path.write_bytes(b"".join(lines[lineno - 1] + b"\n" for lineno, rec in records if rec["pair_id"] in whole))
    return whole


def distill(pairs: Sequence[PreferencePair], judge: Judge, out_path: str | Path,
            config: DistillConfig | None = None) -> DistillResult:
    """Write teacher SFT rows for ``pairs`` to ``out_path`` (JSONL, appended) and a summary beside it.

    ``<out>.rejected.jsonl`` lists each pair dropped in this run with its reason; ``<out>.summary.json``
    holds the counts, the teacher, the prompt version and the judge statistics.
    """
    cfg = config or DistillConfig()
    jc = judge.config
    if jc.samples != 1 or jc.criteria_samples != 1 or not jc.unified_criteria:
        # a trace is one criteria text and one evaluation text; a mean over samples has no single text
        raise ValueError(f"distill needs one criteria set and one evaluation per response (samples=1, "
                         f"criteria_samples=1, unified criteria); got samples={jc.samples}, "
                         f"criteria_samples={jc.criteria_samples}, unified_criteria={jc.unified_criteria}.")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = done_pair_ids(out)
    todo = [p for p in pairs if p.id not in done]
    kept, reasons = 0, Counter[str]()
    teacher = judge.backend.model_id
    with out.open("a", encoding="utf-8") as rows_f, \
            open(f"{out}.rejected.jsonl", "w", encoding="utf-8") as rej_f:
        for start in range(0, len(todo), cfg.chunk_pairs):
            chunk = todo[start:start + cfg.chunk_pairs]
            items: list[ScoredItem] = judge.score_batch([(p.prompt, [p.chosen, p.rejected]) for p in chunk])
            for pair, item in zip(chunk, items, strict=True):
                ch, rj = item.judgments
                reason = rejection_reason(item.criteria[0], ch, rj, cfg.min_margin)
                if reason is not None:
                    reasons[reason] += 1
                    rej_f.write(json.dumps({"pair_id": pair.id, "reason": reason, "chosen_score": ch.score,
                                            "rejected_score": rj.score}) + "\n")
                    continue
                # both rows in one write: a pair is in the file whole or (cut off mid-line) not at all
                rows_f.write("".join(r.model_dump_json() + "\n" for r in sft_rows(pair, item.criteria[0], ch, rj,
                                                                                  teacher)))
                kept += 1
            rows_f.flush()
            rej_f.flush()
            logger.info("distill: %d/%d pairs judged, %d kept", start + len(chunk), len(todo), kept)
    result = DistillResult(kept, len(pairs) - len(todo), dict(sorted(reasons.items())), out)
    summary: dict[str, Any] = {
        "teacher": teacher, "prompt_version": PROMPT_VERSION, "min_margin": cfg.min_margin,
        "pairs": len(pairs), "skipped_already_done": result.skipped, "kept_pairs": kept, "rows_written": 2 * kept,
        "rejected": result.rejected, "judge": judge.stats.as_dict(),
        "warnings": [w for w in [embedded_warning(teacher)] if w],
    }
    Path(f"{out}.summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return result
