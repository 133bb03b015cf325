"""The TRL reward function, called the way GRPOTrainer calls it, and a real GRPO run (examples/trl_grpo.py)."""

from __future__ import annotations

import asyncio
import json
import runpy
import sys
from pathlib import Path

import pytest

from cerm import Judge
from cerm.backends.fake import CANNED_CRITERIA, FakeBackend, canned_evaluation, hash_score
from cerm.reward.scoring import RewardConfig
from cerm.reward.trl import AsyncCermReward, CermReward, completion_to_text, prompt_to_query

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trl_grpo.py"


class Recorder:
    def __init__(self) -> None:
        self.metrics: dict[str, list[float]] = {}
        self.extra: dict[str, list] = {}

    def log_metric(self, name: str, value: float) -> None:
        self.metrics.setdefault(name, []).append(value)

    def log_extra(self, column: str, values: list) -> None:
        self.extra.setdefault(column, []).extend(values)


def trl_kwargs(rec: Recorder, n: int) -> dict:
    """What GRPOTrainer._calculate_rewards passes besides prompts/completions."""
    return {"completion_ids": [[1, 2]] * n, "trainer_state": object(), "log_extra": rec.log_extra,
            "log_metric": rec.log_metric, "solution": ["unused column"] * n}


def test_standard_format_groups_by_prompt_and_logs():
    backend = FakeBackend()
    reward = CermReward(Judge(backend))
    prompts = ["Why is the sky blue?"] * 3 + ["Name a prime."] * 3
    completions = ["Rayleigh scattering.", "Because.", "Blue light scatters more.", "7", "9", "2"]
    rec = Recorder()
    rewards = reward(prompts=prompts, completions=completions, **trl_kwargs(rec, 6))
    assert rewards == [hash_score(c) / 10 for c in completions]
    assert backend.num_prompts == 2 + 6
    assert rec.metrics["cerm/parse_fail_rate"] == [0.0]
    assert rec.metrics["cerm/criteria_generated"] == [2.0]
    assert rec.metrics["cerm/criteria_cache_hits"] == [0.0]
    assert "cerm/tie_rate" in rec.metrics
    assert rec.extra["cerm_score"] == [hash_score(c) for c in completions]
    assert rec.extra["cerm_status"] == ["ok"] * 6
    assert reward.__name__ == "cerm"


def test_conversational_format_drops_system_and_reads_assistant_turn():
    backend = FakeBackend()
    reward = CermReward(Judge(backend), RewardConfig(scale="raw"))
    prompt = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Capital of France?"}]
    completions = [[{"role": "assistant", "content": "<think>easy</think>Paris."}],
                   [{"role": "assistant", "content": "Lyon."}]]
    rewards = reward(prompts=[prompt, prompt], completions=completions)
    assert rewards == [hash_score("Paris."), hash_score("Lyon.")]
    criteria_prompt = backend.calls[0][0][0][0]["content"]
    assert "Capital of France?" in criteria_prompt and "You are terse." not in criteria_prompt


def test_prompt_and_completion_conversions():
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
               {"role": "user", "content": [{"type": "text", "text": "2+"}, {"type": "text", "text": "2?"}]}]
    assert prompt_to_query(history) == [{"role": "user", "content": "hi"},
                                        {"role": "assistant", "content": "hello"},
                                        {"role": "user", "content": "2+2?"}]
    assert prompt_to_query([{"role": "user", "content": "only"}]) == "only"
    assert completion_to_text([{"role": "assistant", "content": "a"}, {"role": "tool", "content": "t"},
                               {"role": "assistant", "content": "final"}]) == "final"
    with pytest.raises(ValueError, match="no assistant message"):
        completion_to_text([{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="'image' content block"):
        prompt_to_query([{"role": "user", "content": [{"type": "image", "image": None}]}])


def test_parse_failure_is_none_when_configured():
    def script(messages, params):
        return CANNED_CRITERIA if len(messages) == 1 else (
            "no score here" if "bad" in messages[-1]["content"] else canned_evaluation(8))

    reward = CermReward(Judge(FakeBackend(script=script)), RewardConfig(failure_reward=None))
    rec = Recorder()
    assert reward(prompts=["q", "q"], completions=["good", "bad"], log_metric=rec.log_metric) == [0.8, None]
    assert rec.metrics["cerm/parse_fail_rate"] == [0.5]


def test_async_variant_refuses_trl_that_does_not_await_it(monkeypatch):
    """trl < 1.14 called it synchronously: "'coroutine' object is not iterable" deep in GRPOTrainer."""
    import importlib.metadata

    from cerm.reward.trl import check_trl_awaits_rewards

    for old in ("1.13.2", "0.19.1"):
        with pytest.raises(RuntimeError, match=rf"needs trl >= 1.14 \(installed: trl {old}"):
            check_trl_awaits_rewards(old)
    check_trl_awaits_rewards("1.14.0")
    check_trl_awaits_rewards("2.0.0.dev0")
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.13.0")
    with pytest.raises(RuntimeError, match="use CermReward"):
        AsyncCermReward(Judge(FakeBackend()))
    CermReward(Judge(FakeBackend()))  # the sync reward works on older TRL


def test_async_variant_runs_off_the_event_loop():
    reward = AsyncCermReward(Judge(FakeBackend()))
    from trl.trainer.utils import is_async_callable

    assert is_async_callable(reward)  # TRL's own check decides whether to await it
    rec = Recorder()

    async def main() -> list:
        # two reward calls gathered on one loop, as TRL does with several async reward functions
        return await asyncio.gather(reward(prompts=["q"] * 2, completions=["a", "b"], log_metric=rec.log_metric),
                                    reward(prompts=["p"], completions=["c"]))

    first, second = asyncio.run(main())
    assert first == [hash_score("a") / 10, hash_score("b") / 10] and second == [hash_score("c") / 10]
    assert rec.metrics["cerm/criteria_generated"] == [1.0]


def run_example(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "run"
    argv = sys.argv
    sys.argv = [str(EXAMPLE), "--output", str(out), *args]
    try:
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    finally:
        sys.argv = argv
    return json.loads((out / "summary.json").read_text())


def check_rewards_reached_trainer(summary: dict, steps: int, n: int = 8, prompts: int = 2) -> None:
    assert summary["steps"] == steps
    logs = [h for h in summary["log_history"] if "rewards/cerm/mean" in h]
    assert len(logs) == steps == len(summary["reward_calls"])
    for log, call in zip(logs, summary["reward_calls"], strict=True):
        # one reward call per step (one generation batch): TRL's logged mean is the mean we returned
        assert call["n"] == n and call["prompts"] == prompts
        assert log["rewards/cerm/mean"] == pytest.approx(sum(call["rewards"]) / call["n"], abs=1e-5)
        assert "cerm/parse_fail_rate" in log and "cerm/criteria_generated" in log


def test_trl_grpo_example_trains_with_cerm_reward(tmp_path, tiny_model_dir):
    summary = run_example(tmp_path, "--policy", str(tiny_model_dir), "--judge-backend", "fake", "--max-steps", "2")
    check_rewards_reached_trainer(summary, 2)
    assert summary["weights_changed"]  # the scripted scores differ within groups: GRPO has a signal
    assert summary["judge"]["criteria_generated"] == 4  # 2 prompts per step, criteria once each
    assert summary["judge"]["evaluations_generated"] == 16


def test_trl_prefetch_hands_each_steps_prompts_over_before_its_rollouts(tmp_path, tiny_model_dir):
    """With the reward attached, GRPOTrainer's own loop hands each step's prompts to the judge before it
    generates that step's rollouts (so before the step's reward call), once; criteria stay once per prompt.
    """
    on = run_example(tmp_path / "on", "--policy", str(tiny_model_dir), "--judge-backend", "fake", "--max-steps", "2")
    off = run_example(tmp_path / "off", "--policy", str(tiny_model_dir), "--judge-backend", "fake",
                      "--max-steps", "2", "--no-prefetch")
    check_rewards_reached_trainer(on, 2)
    kinds = [kind for kind, _ in on["events"]]
    assert kinds == ["prefetch", "reward", "prefetch", "reward"]
    for (_, sent), (_, judged) in zip(on["events"][::2], on["events"][1::2], strict=True):
        assert sent == judged and len(sent) == 2  # the step's two prompts, ahead of their reward
    assert [kind for kind, _ in off["events"]] == ["reward", "reward"]
    assert on["judge"]["criteria_generated"] == off["judge"]["criteria_generated"] == 4  # once per prompt
    assert [c["rewards"] for c in on["reward_calls"]] == [c["rewards"] for c in off["reward_calls"]]


def test_trl_grpo_example_with_tiny_model_judge(tmp_path, tiny_model_dir):
    """Real model calls on both sides: the tiny random Qwen3 is the policy and the judge (hf backend)."""
    summary = run_example(tmp_path, "--policy", str(tiny_model_dir), "--judge-backend", "hf",
                          "--judge-model", str(tiny_model_dir), "--max-steps", "2",
                          "--criteria-max-new-tokens", "16", "--eval-max-new-tokens", "16", "--failure-reward", "-1")
    check_rewards_reached_trainer(summary, 2)
    statuses = summary["judge"]["statuses"]
    assert summary["judge"]["criteria_generated"] == 4 and sum(statuses.values()) == 16
    # a random model never writes a readable score: every reward must be the explicit failure value
    assert statuses.get("ok", 0) == 0
    assert all(r == -1 for call in summary["reward_calls"] for r in call["rewards"])


@pytest.mark.slow
def test_trl_grpo_example_with_embedded_judge(tmp_path, tiny_model_dir):
    """No token flags: the embedded judge gets its own budgets, not the 4096/8192 meant for CE-RM-4B on a GPU
    (with those this run was still going after 420 s)."""
    summary = run_example(tmp_path, "--policy", str(tiny_model_dir), "--judge-backend", "hf",
                          "--judge-model", "embedded", "--max-steps", "1", "--num-generations", "2",
                          "--prompts-per-step", "1", "--failure-reward", "-1")
    check_rewards_reached_trainer(summary, 1, n=2, prompts=1)
    assert summary["judge_budgets"] == [192, 160]
    assert summary["warning"] and "plumbing model" in summary["warning"]
    statuses = summary["judge"]["statuses"]
    assert sum(statuses.values()) == 2  # every completion judged by the real model, whatever the outcome
    for call in summary["reward_calls"]:
        # most judgments are truncated: they must be the explicit -1, never a made-up score
        assert all(r == -1 or 0 <= r <= 1 for r in call["rewards"])
