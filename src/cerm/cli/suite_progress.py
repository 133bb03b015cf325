"""``cerm bench suite``'s progress: after each chunk a ledger line, the lengths measured so far, and (at most
every ``ETA_EVERY_S``) an ETA line on stderr from this session's measured tokens per second.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from cerm.bench.cost import Calls, TokenModel, measured_lengths, token_model
from cerm.bench.suite import BenchPlan, append_ledger
from cerm.humanize import count, duration
from cerm.judge import Judge, JudgeConfig

ETA_EVERY_S = 30.0  # at most one ETA line per this many seconds (plus the first chunk and each benchmark's end)


class Meter:
    """After each chunk: a ledger line, the lengths measured so far, and (rate-limited) an ETA line."""

    def __init__(self, root: Path, session: str, plans: list[BenchPlan], tokens: TokenModel, model: str,
                 config: JudgeConfig, lengths: tuple[list[int], list[int]]) -> None:
        self.root, self.session, self.plans, self.tokens = root, session, plans, tokens
        self.model, self.config = model, config
        self.criteria_lengths, self.evaluation_lengths = lengths
        self.wall_before = 0.0  # this session's wall seconds in finished benchmarks
        self.tokens_before = 0
        self.last_print = -1e9
        self.index = 0
        self.judge: Judge | None = None
        self.start = time.monotonic()
        self.offset = 0
        self.seen: set[str] = set()

    def begin(self, index: int, judge: Judge) -> None:
        """Start timing benchmark ``index`` with ``judge``."""
        self.index, self.judge, self.start = index, judge, time.monotonic()
        plan = self.plans[index]
        self.offset = 0
        pending = {it.id for it in plan.pending}
        self.seen = {it.id for it in plan.items if it.id not in pending}  # their lengths are counted already

    def _read_new_records(self) -> None:
        """Lengths of the records appended since the last call (a file rewritten shorter is read again)."""
        path = self.plans[self.index].out_dir / "items.jsonl"
        if path.stat().st_size < self.offset:
            self.offset = 0
        with open(path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # whole lines only
        self.offset += end
        recs = [r for r in (json.loads(line) for line in data[:end].splitlines() if line.strip())
                if r["id"] not in self.seen]
        self.seen.update(r["id"] for r in recs)
        crit, evals = measured_lengths(recs)
        self.criteria_lengths += crit
        self.evaluation_lengths += evals

    def __call__(self, done: int, total: int, *, final: bool = False) -> None:
        """Report ``done`` of ``total`` items (and a measured ETA once some are done)."""
        assert self.judge is not None
        plan, stats = self.plans[self.index], self.judge.stats
        wall = time.monotonic() - self.start
        calls = stats.criteria_generated + stats.evaluations_generated
        append_ledger(self.root, self.session, plan.name, wall, done, stats.tokens_out, calls, finished=final)
        self._read_new_records()
        now = time.monotonic()
        if not final and (done == total or now - self.last_print < ETA_EVERY_S and self.last_print > -1e9):
            return  # a benchmark's last chunk is reported by the final call that follows
        self.last_print = now
        self.tokens = token_model(self.model, self.config, self.criteria_lengths, self.evaluation_lengths)
        left = Calls(max(0, plan.calls.criteria - stats.criteria_generated),
                     max(0, plan.calls.evaluations - stats.evaluations_generated))
        for p in self.plans[self.index + 1:]:
            left = left + p.calls
        session_wall, session_tokens = self.wall_before + wall, self.tokens_before + stats.tokens_out
        remaining = self.tokens.expected(left)
        line = f"[{plan.name} {done}/{total}] {session_tokens:,} tokens in {duration(session_wall)}"
        if session_tokens and remaining is not None:
            rate = session_tokens / max(session_wall, 1e-9)
            line += f" ({rate:.1f} tok/s); left ~{count(remaining)} tokens: ETA {duration(remaining / rate)}"
        elif not session_tokens:
            line += "; nothing generated yet (cache hits): no rate to measure"
        typer.echo(line, err=True)

    def end(self) -> None:
        """Finish the current benchmark's line."""
        assert self.judge is not None
        self.wall_before += time.monotonic() - self.start
        self.tokens_before += self.judge.stats.tokens_out
