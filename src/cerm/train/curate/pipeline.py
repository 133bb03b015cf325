"""``cerm curate``: raw preference pairs -> a curated, balanced training set and a disjoint held-out split.

The paper curates ~5.7K pairs from an open-source preference set but publishes neither the data nor the
recipe; every step and default here is ours [R] (docs/training.md §1):

1. load and validate (bad rows go to ``invalid.jsonl`` with file:line:field, never dropped silently);
2. drop identical responses, over-budget lengths, other languages, prompts found in evaluation sets;
3. drop exact duplicates, cluster near-duplicate prompts (MinHash) and keep one pair per prompt cluster;
4. balance the domains to the target size while running the pass-rate filter lazily: pairs are judged
   domain by domain only until each domain's quota is filled (judgments are cached, so reruns resume);
5. split off a held-out set by whole prompt clusters, so it shares no prompt with the training split.

Outputs in ``out_dir``: ``train.jsonl``, ``heldout.jsonl``, ``invalid.jsonl``, ``removed.jsonl`` (id, step,
reason for every removed pair), ``pass_rates.jsonl``, ``report.json`` and ``pass_rate_hist.png``.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cerm.backends.base import Backend
from cerm.cache import Store
from cerm.judge import Judge, JudgeConfig
from cerm.train.curate.config import CurateConfig, StepCount
from cerm.train.curate.dedup import cluster_near_duplicates, drop_exact_duplicates
from cerm.train.curate.eval_prompts import load_prompts
from cerm.train.curate.filters import (
    EvalIndex,
    FilterResult,
    Removal,
    TokenCounter,
    approx_tokens,
    drop_contaminated,
    drop_identical,
    drop_languages,
    drop_too_long,
)
from cerm.train.curate.passrate import PassRate, judge_pass_rates
from cerm.train.curate.report import build_report, write_report
from cerm.train.pairs import LoadResult, PreferencePair, RowProblem, load_pairs, write_pairs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurateResult:
    """What ``curate`` produced: the two splits, the step counts, the report and the bad input rows."""

    train: list[PreferencePair]
    heldout: list[PreferencePair]
    steps: list[StepCount]
    problems: list[RowProblem]
    pass_rates: dict[str, PassRate]
    report: dict[str, Any]
    out_dir: Path


def water_fill(total: int, weights: Mapping[str, float], caps: Mapping[str, int]) -> dict[str, int]:
    """Integer quotas summing to ``min(total, sum(caps))``, proportional to ``weights``, capped by ``caps``.

    What a capped domain cannot take goes to the others. Remainders go by largest fraction, then by name.
    """
    quotas = {d: 0 for d in weights}
    active = {d for d, w in weights.items() if w > 0 and caps.get(d, 0) > 0}
    remaining = min(total, sum(caps.get(d, 0) for d in active))
    share: dict[str, float] = {}
    while active:
        wsum = sum(weights[d] for d in active)
        share = {d: remaining * weights[d] / wsum for d in active}
        capped = {d for d in active if caps[d] <= share[d]}
        if not capped:
            break
        for d in capped:
            quotas[d] = caps[d]
            remaining -= caps[d]
        active -= capped
    if active:
        for d in active:
            quotas[d] = math.floor(share[d])
        leftover = remaining - sum(quotas[d] for d in active)
        for d in sorted(active, key=lambda d: (-(share[d] - math.floor(share[d])), d))[:leftover]:
            quotas[d] += 1
    return quotas


@dataclass
class _Selector:
    """Balanced selection with the pass-rate filter run lazily, round by round."""

    config: CurateConfig
    judge: Judge | None
    rates_file: Any
    rates: dict[str, PassRate] = field(default_factory=dict)
    removed: list[Removal] = field(default_factory=list)
    all_tie_kept: int = 0

    def verdict(self, rate: PassRate) -> str | None:
        cfg = self.config
        if rate.rate is None:
            return f"no valid judgment ({rate.failed_samples} failed samples)"
        if rate.rate <= cfg.min_pass_rate:
            return f"pass rate {rate.rate:.3f} <= {cfg.min_pass_rate} (always wrong)"
        if rate.rate >= cfg.max_pass_rate:
            return f"pass rate {rate.rate:.3f} >= {cfg.max_pass_rate} (always right)"
        return None

    def judge_chunk(self, batch: list[PreferencePair]) -> list[str | None]:
        """Pass-rate verdict per pair (None = keep); results are written and flushed before returning."""
        if self.judge is None:
            return [None] * len(batch)
        verdicts = []
        for start in range(0, len(batch), self.config.judge_chunk_pairs):
            chunk = batch[start:start + self.config.judge_chunk_pairs]
            for p, rate in zip(chunk, judge_pass_rates(self.judge, chunk, self.config.tie_credit), strict=True):
                self.rates[p.id] = rate
                verdicts.append(self.verdict(rate))
                self.rates_file.write(json.dumps({"id": p.id, "domain": p.domain, **asdict(rate),
                                                  "verdict": verdicts[-1] or "keep"}) + "\n")
            self.rates_file.flush()
        return verdicts

    def select(self, pairs: list[PreferencePair], rng: random.Random) -> dict[str, list[PreferencePair]]:
        cfg = self.config
        total = cfg.target_size + cfg.heldout_size
        pools: dict[str, list[PreferencePair]] = {}
        for p in pairs:
            pools.setdefault(p.domain, []).append(p)
        for d in sorted(pools):
            rng.shuffle(pools[d])
        weights = dict(cfg.domain_weights) if cfg.domain_weights is not None else {d: 1.0 for d in pools}
        for d in sorted(set(pools) - {d for d, w in weights.items() if w > 0}):
            self.removed += [Removal(p.id, "balance", f"domain {d!r} has no weight") for p in pools.pop(d)]
        accepted: dict[str, list[PreferencePair]] = {d: [] for d in pools}
        cursor = dict.fromkeys(pools, 0)
        tie_cap = math.floor(cfg.max_all_tie_share * total)
        judged = passed = 0
        while True:
            caps = {d: len(accepted[d]) + len(pools[d]) - cursor[d] for d in pools}
            quotas = water_fill(total, {d: weights.get(d, 0.0) for d in pools}, caps)
            deficits = {d: quotas[d] - len(accepted[d]) for d in sorted(pools) if quotas[d] > len(accepted[d])}
            if not deficits:
                break
            rate_est = max(passed / judged, 0.05) if judged else 1.0
            batch = []
            for d, need in deficits.items():
                take = min(math.ceil(need / rate_est), len(pools[d]) - cursor[d])
                batch += pools[d][cursor[d]:cursor[d] + take]
                cursor[d] += take
            for p, reason in zip(batch, self.judge_chunk(batch), strict=True):
                judged += 1
                rate = self.rates.get(p.id)
                if reason is None and rate is not None and rate.is_all_tie:
                    if self.all_tie_kept >= tie_cap:
                        reason = f"all comparisons tie and the all-tie cap ({tie_cap}) is reached"
                    else:
                        self.all_tie_kept += 1
                if reason is not None:
                    self.removed.append(Removal(p.id, "pass_rate", reason))
                    continue
                passed += 1
                if len(accepted[p.domain]) < quotas[p.domain]:
                    accepted[p.domain].append(p)
                else:
                    self.removed.append(Removal(p.id, "balance", "passed, but its domain quota is full"))
        for d in sorted(pools):
            self.removed += [Removal(p.id, "balance", "not needed: domain quota filled")
                             for p in pools[d][cursor[d]:]]
        return accepted


def split_heldout(accepted: dict[str, list[PreferencePair]], cluster: Mapping[str, str], heldout_size: int,
                  rng: random.Random) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Held-out pairs drawn per domain in proportion, by whole prompt clusters; the rest is training.

    ``heldout_size`` is met exactly with one pair per prompt; with more, a cluster may overshoot it.
    """
    counts = {d: len(ps) for d, ps in accepted.items()}
    quotas = water_fill(heldout_size, {d: float(n) for d, n in counts.items()}, counts)
    train, heldout = [], []
    for d in sorted(accepted):
        groups: dict[str, list[PreferencePair]] = {}
        for p in accepted[d]:
            groups.setdefault(cluster[p.id], []).append(p)
        keys = sorted(groups)
        rng.shuffle(keys)
        taken = 0
        for k in keys:
            if taken < quotas[d]:
                heldout += groups[k]
                taken += len(groups[k])
            else:
                train += groups[k]
    rng.shuffle(train)
    rng.shuffle(heldout)
    return train, heldout


def token_counter(tokenizer: str | None) -> TokenCounter:
    """A token counter: the tokenizer's, or about 4 characters per token without one."""
    if tokenizer is None:
        return approx_tokens
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def _load_all(sources: Sequence[str | Path], cfg: CurateConfig) -> LoadResult:
    pairs, problems, seen = [], [], set()
    for src in sources:
        res = load_pairs(src, split=cfg.split, strict=cfg.strict)
        problems += res.problems
        for p in res.pairs:
            if p.id in seen:
                problem = RowProblem(str(src), 0, "id", f"duplicate id {p.id!r} across inputs", "row")
                if cfg.strict:
                    raise ValueError(str(problem))
                problems.append(problem)
            else:
                seen.add(p.id)
                pairs.append(p)
    if cfg.strict and not pairs:  # --strict: nothing to curate is an error, not a warning about 0 pairs
        raise ValueError(f"{', '.join(str(s) for s in sources)}: no preference pairs to curate (the input is "
                         "empty); --strict stops here.")
    return LoadResult(pairs, problems)


def curate(sources: Sequence[str | Path], out_dir: str | Path, config: CurateConfig | None = None, *,
           backend: Backend | None = None, store: Store | None = None,
           judge_config: JudgeConfig | None = None) -> CurateResult:
    """Run the curation pipeline (module docstring) and write its outputs to ``out_dir``.

    Args:
        sources: preference files, directories or Hugging Face dataset ids.
        out_dir: where the curated splits and the report go.
        config: curation settings.
        backend: the pass-rate judge's model; required unless ``config.pass_k == 0``.
        store: the judge cache (default ``out_dir/judge-cache.sqlite``); a rerun resumes from it.
        judge_config: decoding limits for the pass-rate judge; samples and temperature come from ``config``.
    """
    cfg = config or CurateConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.pass_k and backend is None:
        raise ValueError("the pass-rate filter needs a judge backend; pass backend=... or set pass_k=0.")
    rng = random.Random(cfg.seed)
    loaded = _load_all(sources, cfg)
    with open(out / "invalid.jsonl", "w", encoding="utf-8") as f:
        for pr in loaded.problems:
            f.write(json.dumps({**asdict(pr), "error": str(pr)}, ensure_ascii=False) + "\n")
    steps = [StepCount("validate", len(loaded.problems), len(loaded.pairs))]
    pairs = loaded.pairs
    removed_file = open(out / "removed.jsonl", "w", encoding="utf-8")  # noqa: SIM115 - entered in the `with` below

    def record(step: str, removals: list[Removal], remaining: int) -> None:
        for r in removals:
            removed_file.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
        removed_file.flush()
        steps.append(StepCount(step, len(removals), remaining))
        logger.debug("curate %s: removed %d, %d remain", step, len(removals), remaining)  # the CLI prints the table

    def apply(result: FilterResult, step: str) -> list[PreferencePair]:
        record(step, result.removed, len(result.kept))
        return result.kept

    with removed_file, open(out / "pass_rates.jsonl", "w", encoding="utf-8") as rates_file:
        pairs = apply(drop_identical(pairs), "identical")
        pairs = apply(drop_too_long(pairs, max_prompt_tokens=cfg.max_prompt_tokens,
                                    max_response_tokens=cfg.max_response_tokens,
                                    count=token_counter(cfg.tokenizer)), "length")
        if cfg.languages:
            pairs = apply(drop_languages(pairs, cfg.languages), "language")
        if cfg.decontaminate:
            index = EvalIndex.build([t for src in cfg.decontaminate for t in load_prompts(src)])
            pairs = apply(drop_contaminated(pairs, index), "decontamination")
        pairs = apply(drop_exact_duplicates(pairs), "exact_duplicate")
        clustering = cluster_near_duplicates(pairs, threshold=cfg.near_dup_threshold,
                                             max_pairs_per_prompt=cfg.max_pairs_per_prompt, seed=cfg.seed + 1)
        pairs = apply(clustering.result, "near_duplicate")
        candidates = Counter(p.domain for p in pairs)
        judge = None
        if cfg.pass_k:
            judge = Judge(backend, cfg.judge_config(judge_config or JudgeConfig()),  # type: ignore[arg-type]
                          store if store is not None else Store(out / "judge-cache.sqlite"))
        selector = _Selector(cfg, judge, rates_file)
        accepted = selector.select(pairs, rng)
        failed = [r for r in selector.removed if r.step == "pass_rate"]
        unused = [r for r in selector.removed if r.step == "balance"]
        selected = sum(len(v) for v in accepted.values())
        record("pass_rate", failed, selected + len(unused))
        record("balance", unused, selected)
    # short of candidates, the held-out split shrinks in proportion rather than starving the training split
    heldout_size = round(cfg.heldout_size * min(1.0, selected / (cfg.target_size + cfg.heldout_size)))
    train, heldout = split_heldout(accepted, clustering.cluster, heldout_size, rng)
    write_pairs(out / "train.jsonl", train)
    write_pairs(out / "heldout.jsonl", heldout)
    steps.append(StepCount("split", 0, len(train) + len(heldout)))
    report = build_report(cfg, sources, steps, loaded.problems, candidates, train, heldout, selector.rates,
                          judge, selector.all_tie_kept)
    write_report(report, out, selector.rates, cfg)
    return CurateResult(train, heldout, steps, loaded.problems, selector.rates, report, out)
