"""`cerm curate` with a scripted judge: filters, dedup, balance, pass-rate filter, split, report, resume."""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path

import pytest

from cerm.backends.fake import CANNED_CRITERIA, FakeBackend, canned_evaluation
from cerm.cache import Store
from cerm.judge import JudgeConfig
from cerm.train.curate.config import CurateConfig
from cerm.train.curate.dedup import cluster_near_duplicates, drop_exact_duplicates
from cerm.train.curate.filters import (
    EvalIndex,
    drop_contaminated,
    drop_identical,
    drop_languages,
    drop_too_long,
)
from cerm.train.curate.passrate import pass_rate
from cerm.train.curate.pipeline import curate, split_heldout, water_fill
from cerm.train.curate.report import pass_rate_histogram
from cerm.train.pairs import PreferencePair
from cerm.types import Message, SamplingParams

_TAG = re.compile(r"<<([\d/]+|nobox)>>")


def scripted(messages: list[Message], params: SamplingParams) -> str:
    """Criteria are canned; a response tagged <<a/b/c>> scores a, b, c ... by sample seed, <<nobox>> fails."""
    if len(messages) == 1:
        return CANNED_CRITERIA
    tag = _TAG.search(messages[-1]["content"])
    assert tag is not None, "every test response carries a score tag"
    if tag.group(1) == "nobox":
        return "I cannot decide."
    scores = [float(s) for s in tag.group(1).split("/")]
    return canned_evaluation(scores[(params.seed or 0) % len(scores)])


def pair(pid: str, prompt: str, chosen: str, rejected: str, domain: str = "chat") -> PreferencePair:
    return PreferencePair(pid, prompt, chosen, rejected, "test", domain)


def _kinds() -> dict[str, tuple[str, str]]:
    return {  # behaviour -> (chosen tag, rejected tag); the pass rate with k=4, tie credit 0.5
        "mixed": ("<<8/2>>", "<<5>>"),  # 0.5: kept
        "right": ("<<9>>", "<<1>>"),  # 1.0: always right, dropped
        "wrong": ("<<1>>", "<<9>>"),  # 0.0: always wrong, dropped
        "broken": ("<<nobox>>", "<<5>>"),  # no valid comparison, dropped
        "tie": ("<<5>>", "<<5>>"),  # all-tie 0.5: kept up to the cap
    }


def _prompt(i: int) -> str:
    """Random words seeded by i: no two prompts are near duplicates or share a 13-gram."""
    rng = random.Random(i)
    return " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(6)) for _ in range(14)) + "?"


def make_pairs() -> list[PreferencePair]:
    pairs, i = [], 0
    for domain in ("chat", "code", "math", "safety"):
        for kind, (c, r) in _kinds().items():
            for rep in range(3 if kind == "mixed" else 1):
                pairs.append(pair(f"{domain}-{kind}-{rep}", _prompt(i), f"Answer A {i} {c}", f"Answer B {i} {r}",
                                  domain))
                i += 1
    return pairs


def write(path: Path, pairs: list[PreferencePair]) -> Path:
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in pairs), encoding="utf-8")
    return path


# ---- pure pieces --------------------------------------------------------------------------------
def test_pass_rate_counts() -> None:
    r = pass_rate([8, 2, None], [5, 5], tie_credit=0.5)
    assert (r.wins, r.ties, r.losses, r.failed_samples, r.rate) == (2, 0, 2, 1, 0.5)
    r = pass_rate([5, 5], [5, 4], tie_credit=0.5)
    assert r.rate == pytest.approx(0.75) and not r.is_all_tie
    assert pass_rate([5], [5], tie_credit=0.0).is_all_tie
    none = pass_rate([None, None], [3], tie_credit=0.5)
    assert none.rate is None and none.comparisons == 0 and none.failed_samples == 2


def test_water_fill() -> None:
    assert water_fill(10, {"a": 1, "b": 1}, {"a": 100, "b": 100}) == {"a": 5, "b": 5}
    assert water_fill(10, {"a": 1, "b": 1}, {"a": 2, "b": 100}) == {"a": 2, "b": 8}
    assert water_fill(10, {"a": 1, "b": 1, "c": 0}, {"a": 3, "b": 3, "c": 9}) == {"a": 3, "b": 3, "c": 0}
    q = water_fill(7, {"a": 1, "b": 1, "c": 1}, {"a": 9, "b": 9, "c": 9})
    assert sum(q.values()) == 7 and max(q.values()) - min(q.values()) == 1


def test_cheap_filters() -> None:
    ps = [pair("same", "q", "Same  text", "same text"), pair("long", "q", "x" * 400, "y"), pair("ok", "q", "a", "b")]
    res = drop_identical(ps)
    assert [r.id for r in res.removed] == ["same"]
    res = drop_too_long(res.kept, max_prompt_tokens=10, max_response_tokens=50)
    assert [r.id for r in res.removed] == ["long"] and "chosen has 100 tokens > 50" in res.removed[0].reason
    langs = drop_languages([pair("en", "Hello there", "a", "b"), pair("fr", "Bonjour", "a", "b")], ["en"],
                           detect=lambda t: "fr" if "Bonjour" in t else "en")
    assert [p.id for p in langs.kept] == ["en"] and "'fr'" in langs.removed[0].reason


def test_real_language_detector() -> None:
    pytest.importorskip("py3langid")
    ps = [pair("en", "Please explain how photosynthesis works in plants.", "a", "b"),
          pair("de", "Bitte erkläre mir, wie die Photosynthese in Pflanzen funktioniert.", "a", "b")]
    assert [p.id for p in drop_languages(ps, ["en"]).kept] == ["en"]


def test_decontamination() -> None:
    bench = ["What is the capital of France?",
             "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"]
    index = EvalIndex.build(bench)
    ps = [pair("exact", "what is the  CAPITAL of france", "a", "b"),
          pair("gram", "Hi: one two three four five six seven eight nine ten eleven twelve thirteen!", "a", "b"),
          pair("clean", "one two three four five six seven eight nine ten eleven twelve", "a", "b")]
    res = drop_contaminated(ps, index)
    assert [p.id for p in res.kept] == ["clean"]
    assert {r.id: r.reason for r in res.removed}["gram"].startswith("prompt shares a 13-gram")


def test_dedup_exact_and_near() -> None:
    base = _prompt(1)
    ps = [pair("a", base, "x", "y"), pair("a-copy", base.upper(), "x ", "Y"), pair("b", base + " please", "z", "w"),
          pair("c", _prompt(2), "x", "y")]
    exact = drop_exact_duplicates(ps)
    assert [r.id for r in exact.removed] == ["a-copy"]
    near = cluster_near_duplicates(exact.kept, threshold=0.8)
    assert near.cluster["b"] == "a" and near.cluster["c"] == "c"
    assert [p.id for p in near.result.kept] == ["a", "c"]
    two = cluster_near_duplicates(exact.kept, threshold=0.8, max_pairs_per_prompt=2)
    assert [p.id for p in two.result.kept] == ["a", "b", "c"]


def test_split_heldout_keeps_clusters_together() -> None:
    accepted = {"chat": [pair(f"c{i}", f"q{i // 2}", "a", "b") for i in range(8)],
                "code": [pair(f"k{i}", f"k{i}", "a", "b", "code") for i in range(4)]}
    cluster = {p.id: f"cl-{p.prompt}" for ps in accepted.values() for p in ps}
    train, held = split_heldout(accepted, cluster, 3, random.Random(0))
    assert len(train) + len(held) == 12 and 3 <= len(held) <= 4
    assert {cluster[p.id] for p in train}.isdisjoint({cluster[p.id] for p in held})
    assert {p.domain for p in held} == {"chat", "code"}


def test_histogram_bins() -> None:
    assert pass_rate_histogram([0.0, 0.05, 0.5, 0.99, 1.0], bins=10) == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="pass_k"):
        CurateConfig(pass_k=1)
    with pytest.raises(ValueError, match="min_pass_rate"):
        CurateConfig(min_pass_rate=0.8, max_pass_rate=0.5)
    with pytest.raises(ValueError, match="backend"):
        curate([], "/tmp/never", CurateConfig(pass_k=2))


# ---- the pipeline end to end --------------------------------------------------------------------
def _config(**kw) -> CurateConfig:
    base = dict(target_size=6, heldout_size=2, pass_k=4, languages=(), judge_chunk_pairs=3, max_all_tie_share=0.25)
    base.update(kw)
    return CurateConfig(**base)  # type: ignore[arg-type]


def test_curate_pipeline_with_scripted_judge(tmp_path: Path) -> None:
    pairs = make_pairs()
    extra = [pair("dup", pairs[0].prompt, pairs[0].chosen, pairs[0].rejected),  # exact duplicate of pairs[0]
             pair("near", pairs[1].prompt + " thanks", "Other A <<8/2>>", "Other B <<5>>"),  # near-dup prompt
             pair("same", _prompt(90), "Identical <<5>>", "identical <<5>>"),
             pair("long", _prompt(91), "A " * 5000 + "<<8/2>>", "B <<5>>")]
    src = write(tmp_path / "pairs.jsonl", pairs + extra)
    (tmp_path / "pairs.jsonl").open("a").write('{"id": "bad", "prompt": "q", "chosen": "x"}\n')
    bench = write(tmp_path / "bench.jsonl", [pair("b", _prompt(5), "x", "y")])  # contaminates pairs[5]
    backend = FakeBackend("judge", scripted)
    out = tmp_path / "out"
    cfg = _config(decontaminate=(str(bench),), max_response_tokens=2000)
    res = curate([src], out, cfg, backend=backend, judge_config=JudgeConfig(eval_max_new_tokens=64))

    steps = {s.step: s.removed for s in res.steps}
    assert steps["validate"] == 1 and steps["identical"] == 1 and steps["length"] == 1
    assert steps["decontamination"] == 1 and steps["exact_duplicate"] == 1 and steps["near_duplicate"] == 1
    assert res.problems[0].line == len(pairs) + len(extra) + 1 and res.problems[0].field == "rejected"
    # only kept kinds survive, balanced over the 4 domains (8 = 6 train + 2 held-out)
    kept = res.train + res.heldout
    assert len(res.train) == 6 and len(res.heldout) == 2
    assert all(p.id.split("-")[1] in ("mixed", "tie") for p in kept)
    assert sum(p.id.split("-")[1] == "tie" for p in kept) <= 2  # all-tie cap: 0.25 x 8
    by_domain = {d: sum(p.domain == d for p in kept) for d in ("chat", "code", "math", "safety")}
    assert by_domain == {"chat": 2, "code": 2, "math": 2, "safety": 2}
    assert {p.prompt_text for p in res.train}.isdisjoint({p.prompt_text for p in res.heldout})
    # judged pairs are the only ones with pass rates; dropped ones are explained in removed.jsonl
    removed = [json.loads(line) for line in (out / "removed.jsonl").read_text().splitlines()]
    reasons = {r["id"]: r["reason"] for r in removed if r["step"] == "pass_rate"}
    for pid, rate in res.pass_rates.items():
        kind = pid.split("-")[1] if pid.count("-") == 2 else pid
        if kind == "right":
            assert rate.rate == 1.0 and "always right" in reasons[pid]
        elif kind == "wrong":
            assert rate.rate == 0.0 and "always wrong" in reasons[pid]
        elif kind == "broken":
            assert rate.rate is None and "no valid judgment (4 failed samples)" in reasons[pid]
        elif kind == "mixed":
            assert rate.rate == 0.5
    # outputs on disk
    for name in ("train.jsonl", "heldout.jsonl", "invalid.jsonl", "pass_rates.jsonl", "report.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "pass_rate_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "report.json").read_text())
    assert report["train_size"] == 6 and report["heldout_size"] == 2
    assert report["pass_rate"]["judged"] == len(res.pass_rates)
    assert sum(report["pass_rate"]["histogram"]["counts"]) == sum(r.rate is not None for r in res.pass_rates.values())
    assert report["domains"]["train"] | report["domains"]["heldout"]
    assert report["judge"]["statuses"]["no_box"] >= 4
    lines = (out / "pass_rates.jsonl").read_text().splitlines()
    assert len(lines) == len(res.pass_rates)
    # every criteria call greedy and shared; evaluations sampled at temperature 1 with k distinct seeds
    eval_params = {p for prompts, p in backend.calls if len(prompts[0]) == 3}
    assert {p.temperature for p in eval_params} == {1.0} and len({p.seed for p in eval_params}) == 4

    # rerun: the same result, every judgment from the cache (resumed), no model call
    calls = backend.num_prompts
    again = curate([src], out, cfg, backend=backend, judge_config=JudgeConfig(eval_max_new_tokens=64))
    assert backend.num_prompts == calls
    assert [p.id for p in again.train] == [p.id for p in res.train]
    assert json.loads((out / "report.json").read_text())["judge"]["evaluations_generated"] == 0


def test_curate_without_pass_rate_and_short_of_candidates(tmp_path: Path) -> None:
    src = write(tmp_path / "p.jsonl", make_pairs()[:10])
    res = curate([src], tmp_path / "out", _config(pass_k=0, target_size=100, heldout_size=10))
    assert len(res.train) + len(res.heldout) == 10 and res.pass_rates == {}
    assert len(res.heldout) == 1  # the held-out split shrinks in proportion
    assert any("only 9 training pairs" in w for w in res.report["warnings"])


def test_report_warns_about_the_embedded_model(tmp_path: Path) -> None:
    from cerm.backends.embedded import EMBEDDED_ID, EMBEDDED_WARNING

    backend = FakeBackend("judge", scripted)
    backend.model_id = EMBEDDED_ID
    res = curate([write(tmp_path / "p.jsonl", make_pairs()[:7])], tmp_path / "out", _config(target_size=1, heldout_size=0),
                 backend=backend)
    assert EMBEDDED_WARNING in res.report["warnings"]


@pytest.mark.slow
def test_curate_rmb_slice_with_embedded_judge(shared_data: Path, tmp_path: Path) -> None:
    """The embedded SmolLM2 (a plumbing model that judges at chance; run by transformers from its cached HF
    conversion) as the pass-rate judge on two RMB pairs, k=2, 8 new tokens: structure, never accuracy."""
    from support import MODEL_CACHE

    from cerm.backends.hf import HFBackend
    from cerm.backends.vllm import embedded_hf_dir

    slice_dir = tmp_path / "rmb"
    slice_dir.mkdir()
    for rel in ("Harmlessness/S1.json", "Helpfulness/Code/Documentation.json"):
        items = json.loads((shared_data / "rmb" / "Pairwise_set" / rel).read_text(encoding="utf-8"))
        short = sorted(items, key=lambda it: len(json.dumps(it)))[:1]  # the shortest: a fast prompt
        (slice_dir / rel.replace("/", "_")).write_text(json.dumps(short), encoding="utf-8")
    model_dir = embedded_hf_dir(MODEL_CACHE)
    backend = HFBackend(str(model_dir), dtype="float32")
    cfg = _config(target_size=1, heldout_size=1, pass_k=2)
    jc = JudgeConfig(criteria_max_new_tokens=8, eval_max_new_tokens=8)
    out = tmp_path / "out"
    store = Store(out / "judge-cache.sqlite")
    res = curate([slice_dir], out, cfg, backend=backend, store=store, judge_config=jc)
    report = json.loads((out / "report.json").read_text())
    assert report["judge"]["model"] == str(model_dir)
    assert report["domains"]["candidates"] == {"code": 1, "safety": 1}
    assert report["pass_rate"]["judged"] == 2 and (out / "pass_rate_hist.png").exists()
    assert report["judge"]["criteria_generated"] == 2
    judged = report["judge"]["evaluations_generated"]
    assert judged == 2 * 2 * 2  # pairs x responses x k samples
    # cut off at 8 tokens: explicit failures (truncated), never an invented score; such pairs are dropped
    statuses = report["judge"]["statuses"]
    assert sum(statuses.values()) == judged
    valid = {pid for pid, r in res.pass_rates.items() if r.rate is not None}
    kept = {p.id for p in res.train + res.heldout}
    assert kept <= valid and len(res.pass_rates) == 2
    assert report["steps"][-3]["step"] == "pass_rate" and report["steps"][-3]["removed"] == 2 - len(kept)
    assert {p.prompt_text for p in res.train}.isdisjoint({p.prompt_text for p in res.heldout})
    # rerun: resumed from the cache, not one model call
    again = curate([slice_dir], out, cfg, backend=backend, store=store, judge_config=jc)
    report2 = json.loads((out / "report.json").read_text())
    assert report2["judge"]["evaluations_generated"] == 0 and report2["judge"]["criteria_generated"] == 0
    assert report2["judge"]["judgment_cache_hits"] == judged
    assert [p.id for p in again.train] == [p.id for p in res.train]
    assert report2["pass_rate"] == report["pass_rate"]
