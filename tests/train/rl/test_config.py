"""RL config loading (file:line errors, overrides), the resumable pair stream, metrics and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cerm.train.rl.config import RLConfig, load_rl_config, parse_overrides
from cerm.train.rl.metrics import MetricsLogger, describe, pairwise_accuracy, read_metrics, tie_rate

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "ce-rm-4b-rl.yaml"


def test_paper_recipe_loads_with_paper_values():
    cfg = load_rl_config(RECIPE)
    assert (cfg.num_criteria, cfg.num_judgments, cfg.trajectories_per_pair) == (4, 2, 20)
    assert (cfg.learning_rate, cfg.kl_coef, cfg.num_mini_batches) == (2e-6, 1e-3, 4)
    assert cfg.advantage_grouping == "three_group" and cfg.engine == "vllm" and cfg.old_logprobs == "rollout"


def test_overrides_are_typed_and_win(tmp_path):
    cfg = load_rl_config(RECIPE, ["learning_rate=1e-5", "use_lora=true", "mixed_precision=no", "engine=hf"])
    assert cfg.learning_rate == 1e-5 and cfg.use_lora is True and cfg.mixed_precision == "no"
    # YAML 1.1 reads "1e-2" as a string; the overrides still come back as numbers (RLConfig(**...) too)
    assert parse_overrides(["learning_rate=1e-2", "clip_eps=2E-1"]) == {"learning_rate": 0.01, "clip_eps": 0.2}
    with pytest.raises(ValueError, match="unknown key 'lr'"):
        parse_overrides(["lr=1"])
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["learning_rate"])
    assert load_rl_config(RECIPE, ["old_logprobs=recompute"]).old_logprobs == "recompute"
    with pytest.raises(ValueError, match="old_logprobs"):
        load_rl_config(RECIPE, ["old_logprobs=engine"])


def test_bad_recipe_names_file_line_and_field(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("model: m\ntrain_data: t.jsonl\noutput_dir: o\nnum_criteria: many\n")
    with pytest.raises(ValueError, match=r"r\.yaml:4: field 'num_criteria'"):
        load_rl_config(bad)
    bad.write_text("model: m\ntrain_data: t.jsonl\noutput_dir: o\n\nnum_critera: 4\n")
    with pytest.raises(ValueError, match=r"r\.yaml:5: unknown key 'num_critera'"):
        load_rl_config(bad)
    bad.write_text("model: m\ntrain_data: t.jsonl\noutput_dir: o\npairs_per_step: 6\n")
    with pytest.raises(ValueError, match="num_mini_batches .* must divide pairs_per_step"):
        load_rl_config(bad)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("format_penalty", 0.5, "format_penalty"), ("tie_credit", 2.0, "tie_credit"),
    ("temperature", 0.0, "temperature"), ("num_judgments", 0, "num_judgments"),
])
def test_config_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        RLConfig(model="m", train_data="t", output_dir="o", **{field: value})


def test_pair_stream_is_a_pure_function_of_position(tmp_path):
    from cerm.train.rl.data import PairStream, read_pairs, split_holdout

    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"q{i}", "chosen": "a", "rejected": "b"}) + "\n"
                            for i in range(10)))
    pairs = read_pairs(path)
    stream = PairStream(pairs, seed=3)
    first = [p.id for p in stream.take(0, 25)]
    assert sorted(first[:10]) == sorted(p.id for p in pairs)  # one epoch = a permutation
    assert first[10:20] != first[:10]  # a fresh order per epoch
    assert [p.id for p in PairStream(pairs, seed=3).take(7, 12)] == first[7:19]  # resume mid-stream
    train, held = split_holdout(pairs, 3, seed=0)
    assert len(train) == 7 and len(held) == 3 and not {p.id for p in train} & {p.id for p in held}
    with pytest.raises(ValueError, match="eval_holdout"):
        split_holdout(pairs, 10, seed=0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "prompt": "q", "chosen": "", "rejected": "b"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl.*1.*chosen"):
        read_pairs(bad)


def test_metric_functions():
    assert pairwise_accuracy([8.0, 5.0, None, 3.0], [7.0, 5.0, 1.0, 9.0]) == 0.25
    assert tie_rate([8.0, 5.0, None, 3.0], [7.0, 5.0, 1.0, 9.0]) == 0.25
    assert math.isnan(pairwise_accuracy([], []))
    with pytest.raises(ValueError):
        pairwise_accuracy([1.0], [])
    d = describe("r", [1.0, 3.0])
    assert d == {"r/mean": 2.0, "r/std": 1.0, "r/min": 1.0, "r/max": 3.0}
    assert describe("r", []) == {}


def test_metrics_jsonl_and_plots(tmp_path):
    from cerm.train.rl.plot import plot_run

    seen = []
    log = MetricsLogger(tmp_path / "metrics.jsonl", None, [lambda s, m: seen.append(s)])
    for step in range(1, 4):
        log.log(step, {"rollout/pairwise_accuracy": 0.2 * step, "loss/kl": 0.01 * step, "reward/chosen/mean": 0.1,
                       "eval/pairwise_accuracy": float("nan")})
    log.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "loss/kl"')  # a run killed mid-line
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3] and seen == [1, 2, 3]
    assert records[0]["eval/pairwise_accuracy"] is None  # NaN is written as null, valid JSON
    paths = plot_run(tmp_path)
    assert {p.name for p in paths} == {"accuracy.png", "optimisation.png", "rewards.png"}
    assert all(p.stat().st_size > 5000 for p in paths)
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plot_run(tmp_path / "nowhere")
