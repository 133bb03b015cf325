"""The two-stage rollout RL trainer on a tiny model: one-step invariants, KL, exact resume, LoRA, CLI, and
the learnability proof (issue 7).

Task of the one-step, KL, resume, LoRA and CLI tests (generated here): "What is 2 x a?" with the chosen
response ``2a`` (correct) and the rejected one an odd off-by-some answer; SFT cold start on the tiny random
Qwen3 (real SmolLM2 tokenizer) teaching only the output format with label-free random scores.

The learnability proof itself (bottom of this file) runs on a smaller task and model, tests/train/rl/rl_task.py:
"What is a + b?", chosen "The answer is <a+b>.", rejected "I do not know.", a 1-layer random Qwen3 (hidden 64,
real 49k vocabulary), a label-free cold start that quotes the response and then writes a score uniform in 2..8.
The single-group ablation runs with ``CERM_RL_ABLATION=1`` (figures only).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")
pytest.importorskip("trl")

SFT_VERSION = "answer-then-score-v1"  # bump when sft_cold_start changes: the result is cached per machine
CRITERIA_TEXT = "[Start of Criteria]\n1. Correctness: the number is right.\n[End of Criteria]"


def arithmetic_pairs(values: list[int], seed: int) -> list[dict]:
    """``2 x a`` with a three-digit answer: chosen correct (even), rejected off by an odd amount (odd)."""
    rng = random.Random(seed)
    return [{"id": f"mul-{a}", "prompt": f"What is 2 x {a}? Answer with the number only.", "chosen": str(2 * a),
             "rejected": str(2 * a + rng.choice([-3, -1, 1, 3]))} for a in values]


def task_values(seed: int = 0) -> tuple[list[int], list[int]]:
    """Disjoint training (96) and held-out (32) values of a, all with three-digit answers."""
    values = list(range(52, 498))
    random.Random(seed).shuffle(values)
    return sorted(values[:96]), sorted(values[96:128])


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def answer_then_score(response: str, rng: random.Random) -> str:
    """The cold start's evaluation turn: restate the answer (format, the same for chosen and rejected), then a
    fresh label-free score in 0..9."""
    return f"Answer {response}. Overall: \\boxed{{{rng.randint(0, 9)}}}"


def rl_config(task, out: Path, **overrides):
    from cerm.train.rl.config import RLConfig

    root, train, held, sft = task
    values = dict(model=str(sft), train_data=str(train), eval_data=str(held), output_dir=str(out), seed=1,
                  num_criteria=4, num_judgments=2, criteria_max_new_tokens=24, eval_max_new_tokens=20,
                  pairs_per_step=4, num_mini_batches=2, micro_batch_size=40, learning_rate=1e-3,
                  kl_coef=1e-3, max_steps=20, eval_every=5, save_total_limit=1, generation_batch_size=160)
    values.update(overrides)
    return RLConfig(**values)


@pytest.fixture(scope="module")
def task(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("rl")
    train_values, held_values = task_values()
    train_rows = arithmetic_pairs(train_values, seed=0)
    train = write_jsonl(root / "train.jsonl", train_rows)
    held = write_jsonl(root / "held.jsonl", arithmetic_pairs(held_values, seed=1))
    return root, train, held, cached_sft(tiny_model_dir, train_rows)


def cached_sft(tiny_model_dir: Path, rows: list[dict]) -> Path:
    """The SFT cold start, built once per machine next to the tiny model (keyed by its recipe and data)."""
    from filelock import FileLock

    from rl.rl_task import sft_cold_start

    key = hashlib.sha256(json.dumps([SFT_VERSION, CRITERIA_TEXT, rows]).encode()).hexdigest()[:12]
    out = tiny_model_dir.parent / f"rl-sft-{key}"
    with FileLock(str(out) + ".lock"):
        if not (out / "config.json").exists():
            t0 = time.perf_counter()
            sft_cold_start(tiny_model_dir, rows, out, answer_then_score, criteria_text=CRITERIA_TEXT, steps=120,
                           batch=16, lr=3e-3)
            print(f"SFT cold start: {time.perf_counter() - t0:.1f}s")
    return out


# ---------------------------------------------------------------------------------------------- one step
def test_one_step_invariants(task):
    """20 trajectories per pair, groups 4/8/8 with zero-mean advantages, criteria masked in judgments."""
    from cerm.train.rl.algorithm import group_key
    from cerm.train.rl.logprobs import collate
    from cerm.train.rl.trainer import RLTrainer

    root = task[0]
    trainer = RLTrainer(rl_config(task, root / "one-step", eval_data=None, pairs_per_step=2, max_steps=1))
    metrics = trainer.step()
    scored = trainer.last_scored
    trajs = scored.trajectories
    assert len(trajs) == 2 * 20
    groups: dict = {}
    for t, adv, reward in zip(trajs, scored.advantages, scored.rewards, strict=True):
        groups.setdefault(group_key(t.pair_index, t.role, t.criteria_index, "three_group"), []).append((adv, reward))
    assert sorted(len(v) for v in groups.values()) == [4] * 2 + [8] * 4
    assert {k[1] for k in groups} == {"criteria", "chosen", "rejected"}
    for members in groups.values():
        assert abs(sum(a for a, _ in members) / len(members)) < 1e-6
    # the SFT model mostly writes valid, label-free scores (sampling at T=1 over the full vocabulary breaks
    # some): the rewards vary, so some advantages are non-zero
    assert metrics["rollout/parse_failure_rate"] < 0.6 and any(scored.advantages)
    # loss mask = exactly the sampled judgment tokens; the criteria span lies in the unmasked context
    crit = {(t.pair_index, t.criteria_index): t.completion_ids for t in trajs if t.role == "criteria"}
    judgments = [t for t in trajs if t.role != "criteria"][:6]
    batch = collate(judgments, trainer.pad_id)
    width = batch.input_ids.shape[1]
    for row, t in enumerate(judgments):
        assert batch.completion_mask[row].sum() == len(t.completion_ids)
        first_loss_pos = width - len(t.completion_ids)  # absolute position of the first loss token
        pad = width - t.length
        start, stop = t.criteria_span
        sampled = crit[t.pair_index, t.criteria_index]
        body = sampled[:-1] if sampled[-1] in trainer.stop_ids else sampled
        assert stop - start == len(body) > 5 and pad + stop <= first_loss_pos
        assert batch.input_ids[row, pad + start:pad + stop].tolist() == list(body)
        assert batch.completion_mask[row, :first_loss_pos - (width - batch.completion_mask.shape[1])].sum() == 0
    assert metrics["loss/kl"] >= 0 and 0 <= metrics["loss/clip_fraction"] <= 1


def test_kl_is_zero_when_policy_equals_reference(task):
    from cerm.train.rl.algorithm import ppo_loss
    from cerm.train.rl.logprobs import collate, completion_logprobs
    from cerm.train.rl.trainer import RLTrainer

    trainer = RLTrainer(rl_config(task, task[0] / "kl", eval_data=None, pairs_per_step=2, max_steps=1))
    trainer.step()  # rollouts only matter here; compare a fresh policy and its reference on them
    fresh = RLTrainer(rl_config(task, task[0] / "kl2", eval_data=None, pairs_per_step=2, max_steps=1))
    batch = collate(trainer.last_scored.trajectories[:8], fresh.pad_id)
    with torch.no_grad():
        logp = completion_logprobs(fresh.model, batch, 1.0)
        ref = fresh._ref_logprobs(batch)
        moved = completion_logprobs(trainer.model, batch, 1.0)  # after one step of updates
    out = ppo_loss(logp, logp, ref, torch.zeros(8), batch.completion_mask, 0.2, 1e-3)
    assert out.kl == 0.0 and out.clip_fraction == 0.0 and out.ratio_mean == pytest.approx(1.0)
    assert not torch.equal(moved * batch.completion_mask, logp * batch.completion_mask)  # the step did train
    assert ppo_loss(moved, logp, ref, torch.zeros(8), batch.completion_mask, 0.2, 1e-3).kl > 0


def test_ppo_loss_decreases_on_a_toy_reward(task):
    """Fixed trajectories, advantage +1 for half and -1 for the rest: PPO steps raise the first half's log-prob."""
    from transformers import AutoModelForCausalLM

    from cerm.train.rl.algorithm import ppo_loss
    from cerm.train.rl.logprobs import collate, completion_logprobs
    from cerm.train.rl.trainer import RLTrainer

    trainer = RLTrainer(rl_config(task, task[0] / "toy", eval_data=None, pairs_per_step=2, max_steps=1))
    trainer.step()
    trajs = [t for t in trainer.last_scored.trajectories if t.role == "chosen"][:8]
    batch = collate(trajs, trainer.pad_id)
    model = AutoModelForCausalLM.from_pretrained(task[3], dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    adv = torch.tensor([1.0] * 4 + [-1.0] * 4)
    with torch.no_grad():
        old = completion_logprobs(model, batch, 1.0)
    losses = []
    for _ in range(4):
        out = ppo_loss(completion_logprobs(model, batch, 1.0), old, old, adv, batch.completion_mask, 0.2, 1e-3)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.policy_loss)
    with torch.no_grad():
        new = completion_logprobs(model, batch, 1.0)
    mean = lambda x: ((x * batch.completion_mask).sum(-1) / batch.completion_mask.sum(-1))  # noqa: E731
    gain = mean(new) - mean(old)
    assert losses[-1] < losses[0]
    assert gain[:4].mean() > 0 > gain[4:].mean()


# ---------------------------------------------------------------------------------------------- old log-probs
def masked_gap(a, b, mask) -> float:
    return float(((a - b).abs() * mask).max())


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9)])
def test_hf_rollout_logprobs_equal_a_recompute(task, temperature, top_p):
    """The hf engine's log-probs of its sampled tokens = the loss's log_softmax(logits / T) over the full vocabulary
    (not the top-p nucleus), recomputed by a forward pass on the same trajectories: stops, truncations and left
    padding, both in generate's batch and in collate's."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cerm.train.pairs import PreferencePair
    from cerm.train.rl.engine_hf import HFEngine
    from cerm.train.rl.logprobs import collate, completion_logprobs, rollout_logprobs
    from cerm.train.rl.rollout import ChatLayout, rollout_pairs
    from cerm.train.rl.setup import stop_token_ids
    from cerm.types import SamplingParams

    sft = task[3]
    model = AutoModelForCausalLM.from_pretrained(sft, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(sft)
    stops = stop_token_ids(tok, model)
    engine = HFEngine(model, Accelerator(cpu=True), stops, tok.pad_token_id, batch_size=64)
    pairs = [PreferencePair(f"p{a}", f"What is 2 x {a}? Answer with the number only.", str(2 * a), str(2 * a + 1))
             for a in (7, 123)]
    torch.manual_seed(0)
    rollouts = rollout_pairs(pairs, engine, ChatLayout(tok, stops), 3, 2, SamplingParams(temperature, top_p, 24),
                             SamplingParams(temperature, top_p, 12))
    trajs = [t for r in rollouts for t in r.trajectories()]
    assert {t.finish_reason for t in trajs} == {"stop", "length"}
    assert len({len(t.completion_ids) for t in trajs}) > 2 and len({t.length for t in trajs}) > 2
    batch = collate(trajs, tok.pad_token_id)
    with torch.no_grad():
        recomputed = completion_logprobs(model.eval(), batch, temperature)
    sampled = rollout_logprobs(trajs)
    assert sampled.shape == recomputed.shape
    assert masked_gap(sampled, recomputed, batch.completion_mask) < 1e-5
    assert torch.equal(sampled * batch.completion_mask, sampled)  # 0 off the mask
    # not a vacuous match: at another temperature the same tokens have other log-probs
    with torch.no_grad():
        other = completion_logprobs(model, batch, temperature + 0.5)
    assert masked_gap(sampled, other, batch.completion_mask) > 0.1


def counting_forwards(trainer, counts: dict):
    """Wrap ``_reference_logprobs`` to count policy and reference forward calls made inside it and keep the old
    log-probs it returns with their completion masks."""
    from cerm.train.rl.logprobs import collate

    policy = trainer.accelerator.unwrap_model(trainer.model)
    ref = trainer.accelerator.unwrap_model(trainer.ref_model)
    inner = trainer._reference_logprobs

    def counted(*args):
        hooks = [m.register_forward_hook(lambda *_, key=key: counts.__setitem__(key, counts.get(key, 0) + 1))
                 for key, m in (("policy", policy), ("ref", ref))]
        try:
            old, refs = inner(*args)
        finally:
            for h in hooks:
                h.remove()
        scored, updates = args
        masks = {(u, j): collate([scored.trajectories[i] for i in micro], 0).completion_mask
                 for u, micro_batches in enumerate(updates) for j, micro in enumerate(micro_batches)}
        counts.setdefault("old", []).append((old, masks))
        return old, refs

    trainer._reference_logprobs = counted


def test_rollout_old_logprobs_replace_the_recompute_pass(task, caplog):
    """old_logprobs=rollout: no policy forward for the old log-probs of update 2; the same old log-probs and
    losses as old_logprobs=recompute (identical rollouts: same seed, same sampled tokens). Step 2 of the rollout
    run has an engine without log-probs: the trainer recomputes them, and the losses still agree."""
    from cerm.train.rl.trainer import RLTrainer

    small = dict(eval_data=None, num_criteria=2, pairs_per_step=2, num_mini_batches=2, micro_batch_size=5, max_steps=2)
    runs = {}
    for mode in ("rollout", "recompute"):
        trainer = RLTrainer(rl_config(task, task[0] / f"old-{mode}", old_logprobs=mode, **small))
        counts: dict = {}
        counting_forwards(trainer, counts)
        metrics = [trainer.step()]
        policy_forwards = counts.pop("policy", 0)
        # step 2: the rollout run's engine stops giving log-probs; the recompute run's starts, and is ignored
        trainer.engine.logprobs = mode == "recompute"
        with caplog.at_level("WARNING", logger="cerm.train.rl.trainer"):
            metrics.append(trainer.step())
        runs[mode] = trainer, counts, metrics, policy_forwards
    (fast, fast_counts, fast_m, fast_forwards), (slow, slow_counts, slow_m, slow_forwards) = runs.values()
    # 2 pairs x 10 trajectories in 2 updates x 2 micro-batches per step: the reference sees all 4, the recompute
    # the 2 of update 2, in step 1 of the recompute run only
    assert fast_counts["ref"] == slow_counts["ref"] == 2 * 4
    assert (fast_forwards, slow_forwards) == (0, 2)
    assert fast_counts["policy"] == slow_counts["policy"] == 2  # step 2
    assert caplog.text.count("their micro-batches are recomputed") == 1
    assert [t.completion_ids for t in fast.last_scored.trajectories] == \
        [t.completion_ids for t in slow.last_scored.trajectories]
    for (a, masks), (b, _) in zip(fast_counts["old"], slow_counts["old"], strict=True):
        assert a.keys() == b.keys() == {(1, 0), (1, 1)}
        assert all(masked_gap(a[k], b[k], masks[k]) < 1e-5 for k in a)
    for a, b in zip(fast_m, slow_m, strict=True):
        for key in ("loss/policy", "loss/kl", "loss/ratio_mean", "loss/clip_fraction", "grad_norm/mean"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key


# ---------------------------------------------------------------------------------------------- resume
def _comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith(("time/", "throughput/"))}


class Interrupted(Exception):
    pass


def test_resume_reproduces_an_uninterrupted_run(task):
    """Kill a run during step 3 (after its step-2 checkpoint), resume: same metrics and weights as a straight run."""
    from safetensors.torch import load_file

    from cerm.train.rl.metrics import read_metrics
    from cerm.train.rl.trainer import train_rl

    def kill_at_step_3(step: int, metrics: dict) -> None:
        if step == 3:
            raise Interrupted

    root = task[0]
    small = dict(eval_data=None, pairs_per_step=2, num_mini_batches=2, micro_batch_size=8, max_steps=3,
                 lr_scheduler="linear", warmup_steps=1, save_every=1, save_total_limit=None)
    train_rl(rl_config(task, root / "straight", **small))
    with pytest.raises(Interrupted):
        train_rl(rl_config(task, root / "split", **small), callbacks=[kill_at_step_3])
    assert sorted(p.name for p in (root / "split" / "checkpoints").iterdir()) == ["step-000001", "step-000002"]
    train_rl(rl_config(task, root / "split", **small, resume_from="auto"))
    a = read_metrics(root / "straight" / "metrics.jsonl")
    b = read_metrics(root / "split" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 3]  # step 3 logged by the killed run, then by the resumed one
    assert [_comparable(r) for r in a] == [_comparable(r) for r in b[:3]]
    assert _comparable(b[3]) == _comparable(a[2])
    wa = load_file(root / "straight" / "final" / "model.safetensors")
    wb = load_file(root / "split" / "final" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    run = json.loads((root / "split" / "run.json").read_text())
    assert run["step"] == 3 and sum(run["judgment_statuses"].values()) == 3 * 2 * 16


def test_lora_run_exports_a_merged_model(task):
    from transformers import AutoModelForCausalLM

    from cerm.train.rl.trainer import train_rl

    out = task[0] / "lora"
    summary = train_rl(rl_config(task, out, eval_data=None, pairs_per_step=2, max_steps=1, use_lora=True,
                                 lora_r=4, lora_alpha=8, kl_coef=1e-3))
    assert summary["step"] == 1
    merged = AutoModelForCausalLM.from_pretrained(out / "final")
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_cli_train_rl_and_plot(task, tmp_path):
    from typer.testing import CliRunner

    from cerm.cli.train_rl import app

    root, train, held, sft = task
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {sft}\ntrain_data: {train}\noutput_dir: {tmp_path / 'run'}\n"
                      "pairs_per_step: 2\nnum_mini_batches: 2\nmicro_batch_size: 40\ncriteria_max_new_tokens: 24\n"
                      "eval_max_new_tokens: 20\neval_holdout: 2\nlearning_rate: 1.0e-4\n")
    runner = CliRunner()
    result = runner.invoke(app, ["rl", "-c", str(recipe), "max_steps=2"])
    assert result.exit_code == 0, result.output
    assert "step     2" in result.output and "held-out pairwise accuracy" in result.output
    result = runner.invoke(app, ["plot", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "plots" / "accuracy.png").is_file()
    bad = runner.invoke(app, ["rl", "-c", str(recipe), "num_criteria=0"])
    assert bad.exit_code != 0 and "num_criteria" in bad.output


# ---------------------------------------------------------------------------------------------- learnability
# The proof runs on its own, smaller task and model (tests/train/rl/rl_task.py): "What is a + b?", chosen "The
# answer is <a+b>.", rejected "I do not know.", a 1-layer random Qwen3 and a label-free cold start that quotes
# the response, then writes a score drawn uniformly from 2..8.


@pytest.fixture(scope="module")
def sum_task(tiny_model_dir):
    """(train.jsonl, held.jsonl, SFT dir), built once per machine next to the tiny model (keyed by version)."""
    from filelock import FileLock

    from rl.rl_task import TASK_VERSION, build_task

    root = tiny_model_dir.parent / f"rl-{TASK_VERSION}"
    with FileLock(str(root) + ".lock"):
        return build_task(tiny_model_dir, root)


def record(tmp_path: Path, grouping: str, figures: dict) -> None:
    """Figures to a JSON file under the test's tmp dir (and stdout), for the closing report."""
    out = tmp_path / f"learnability-{grouping}.json"
    out.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    print(f"{grouping}: {json.dumps({k: v for k, v in figures.items() if k != 'evals'})}; figures in {out}")


def test_two_stage_rl_learns_the_preference(sum_task, tmp_path):
    """20 RL steps (8 pairs each, default 4 + 16 rollouts per pair) take held-out accuracy from chance to >= 0.9."""
    from rl.rl_task import run, score_margins

    train, held, sft = sum_task
    before = score_margins(sft, held)
    evals = run(train, held, sft, tmp_path / "rl", "three_group")
    after = score_margins(tmp_path / "rl" / "final", held)
    record(tmp_path, "three_group", {"evals": evals, "before": before, "after": after})
    first, last = evals[0], evals[max(evals)]
    # the cold start is label-free: greedy ties every pair (strict accuracy counts ties as wrong) and the
    # sampled score distributions of chosen and rejected are the same
    assert first["eval/pairwise_accuracy"] <= 0.65
    assert abs(before["expected_accuracy"] - 0.5) < 0.05
    assert last["eval/parse_failure_rate"] <= 0.1
    assert last["eval/pairwise_accuracy"] >= 0.9
    # not a greedy fluke of near-flat distributions: sampled held-out accuracy moved too
    assert after["expected_accuracy"] >= before["expected_accuracy"] + 0.15
    assert after["mean_margin"] > 0


@pytest.mark.skipif(os.environ.get("CERM_RL_ABLATION") != "1", reason="ablation figures: set CERM_RL_ABLATION=1")
def test_single_group_ablation_figures(sum_task, tmp_path):
    """Same budget with plain single-group GRPO: figures reported, not asserted (beyond the run completing)."""
    from rl.rl_task import run, score_margins

    train, held, sft = sum_task
    evals = run(train, held, sft, tmp_path / "rl", "single_group")
    record(tmp_path, "single_group", {"evals": evals, "before": score_margins(sft, held),
                                      "after": score_margins(tmp_path / "rl" / "final", held)})
    assert evals[max(evals)]["eval/num_pairs"] == 32


def test_cli_train_rl_rejects_bad_data_before_loading_the_model(tmp_path, monkeypatch):
    """A bad row fails with file:line:field before any model loads (the model path here does not even exist)."""
    from typer.testing import CliRunner

    from cerm.cli.train_rl import app
    from cerm.train.rl import trainer

    monkeypatch.setattr(trainer, "load_policy", lambda cfg: pytest.fail("the model loaded before the data"))
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q2", "chosen": "a"}\n')
    res = CliRunner().invoke(app, ["rl", f"model={tmp_path / 'no-such-model'}", f"train_data={bad}",
                                   f"output_dir={tmp_path / 'run'}", "mixed_precision=no"])
    assert res.exit_code != 0
    assert "pairs.jsonl:2" in " ".join(res.output.split()) and "rejected" in res.output, res.output


def test_report_to_an_uninstalled_tracker_is_an_error():
    import importlib.util

    from cerm.train.rl.config import RLConfig

    missing = [t for t in ("tensorboard", "wandb") if importlib.util.find_spec(t) is None]
    if not missing:
        pytest.skip("both trackers are installed")
    with pytest.raises(ValueError, match=f"{missing[0]} is not installed"):
        RLConfig(model="m", train_data="t.jsonl", output_dir="o", report_to=[missing[0]])
