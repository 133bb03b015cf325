"""cerm.reward.verl loaded by verl's own loader (verl==0.9.1: get_custom_reward_fn) and called as its managers
call it; tests/reward/test_verl_real.py drives verl's reward loop itself."""

from __future__ import annotations

import asyncio
import inspect
import sys
from pathlib import Path

import pytest
from support import scripted_judge_app

import cerm.reward.verl as cerm_verl
import cerm.reward.verl_adapter as adapter
from cerm.backends.fake import CANNED_CRITERIA, FakeBackend, canned_evaluation, hash_score
from cerm.reward.client import RemoteError
from cerm.reward.scoring import BackendFailure

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_reward_fn(name: str, reward_kwargs: dict):
    """verl's own get_custom_reward_fn: load the file by path, bind reward_kwargs."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    cfg = OmegaConf.create({"reward": {"custom_reward_function": {"path": cerm_verl.__file__, "name": name,
                                                                  "reward_kwargs": reward_kwargs}}})
    return get_custom_reward_fn(cfg), adapter


def backend_of(module, **kwargs) -> FakeBackend:
    return module._scorer(module.VerlSettings.from_kwargs(kwargs)).batcher.judge.backend


def naive_manager_call(fn, response: str, question, **extra) -> dict:
    """NaiveRewardManager.run_single: one keyword call per sample, extra_info augmented by verl (and, with a
    GRM, reward_router_address + reward_model_tokenizer)."""
    extra_info = {"question": question, "index": 0, "num_turns": None, "rollout_reward_scores": {}}
    return fn(data_source="cerm", solution_str=response, ground_truth="", extra_info=extra_info, **extra)


def test_compute_score_naive_manager_in_process_judge():
    kwargs = {"cerm_backend": "fake", "cerm_model": "verl-naive"}
    fn, module = load_reward_fn("compute_score", kwargs)
    out = [naive_manager_call(fn, r, "Why is the sky blue?") for r in ("Rayleigh.", "<think>x</think>Magic.")]
    assert out == [{"score": hash_score("Rayleigh.") / 10, "cerm_parse_fail": 0.0},
                   {"score": hash_score("Magic.") / 10, "cerm_parse_fail": 0.0}]
    backend = backend_of(module, **kwargs)
    assert backend.num_prompts == 1 + 2  # the resident judge reused the first call's criteria


def test_compute_score_async_reward_loop_shares_criteria():
    kwargs = {"cerm_backend": "fake", "cerm_model": "verl-async"}
    fn, module = load_reward_fn("compute_score_async", kwargs)
    assert inspect.iscoroutinefunction(module.compute_score_async)

    async def loop() -> list[dict]:
        return await asyncio.gather(*(naive_manager_call(fn, f"r{i}", "Why do cats purr?") for i in range(6)))

    out = asyncio.run(loop())
    assert [o["score"] for o in out] == [hash_score(f"r{i}") / 10 for i in range(6)]
    backend = backend_of(module, cerm_backend="fake", cerm_model="verl-async")
    assert sum(len(p) for p, _ in backend.calls if len(p[0]) == 1) == 1


def test_remote_server_sync_async_and_failures(serve_app):
    with serve_app(scripted_judge_app()) as srv:
        kwargs = {"cerm_url": srv.url, "cerm_failure_reward": -0.5}
        fn, _ = load_reward_fn("compute_score", kwargs)
        out = [naive_manager_call(fn, r, "q") for r in ("fine", "garbled", "fine too")]
        assert out == [{"score": 0.7, "cerm_parse_fail": 0.0}, {"score": -0.5, "cerm_parse_fail": 1.0},
                       {"score": 0.7, "cerm_parse_fail": 0.0}]
        single, _ = load_reward_fn("compute_score_async", kwargs)
        assert asyncio.run(naive_manager_call(single, "ok", "q"))["score"] == 0.7
        failing, _ = load_reward_fn("compute_score", {**kwargs, "cerm_retries": 0})
        with pytest.raises(adapter.VerlRewardAbort, match="HTTP 502.*judge crashed") as err:
            naive_manager_call(failing, "explode", "q")
        assert isinstance(err.value.__cause__, RemoteError)


def test_reward_loop_router_address_uses_verls_grm_server(serve_app):
    """With reward_model.model.path set, verl serves the GRM and passes reward_router_address (host:port)."""
    from fastapi import FastAPI

    grm = FastAPI()
    seen: list[dict] = []

    @grm.post("/v1/chat/completions")
    async def chat(body: dict) -> dict:
        seen.append(body)
        text = CANNED_CRITERIA if len(body["messages"]) == 1 else canned_evaluation(4)
        return {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5}}

    with serve_app(grm) as srv:
        fn, _ = load_reward_fn("compute_score_async", {"cerm_model": "served-grm"})
        grm_kwargs = {"reward_router_address": f"127.0.0.1:{srv.port}", "reward_model_tokenizer": object()}

        async def loop() -> list[dict]:
            return await asyncio.gather(*(naive_manager_call(fn, f"r{i}", "Why?", **grm_kwargs) for i in range(3)))

        out = asyncio.run(loop())
    assert [o["score"] for o in out] == [0.4] * 3
    assert all(b["model"] == "served-grm" for b in seen)
    assert sum(len(b["messages"]) == 1 for b in seen) == 1  # criteria once for the three samples


def test_backend_error_in_process_raises():
    from cerm.types import Generation

    def script(messages, params):
        return Generation("", "error", error="connection refused")

    settings = cerm_verl.VerlSettings(backend="fake", model="verl-broken")
    scorer = adapter._scorer(settings)
    scorer.batcher.judge.backend.script = script
    with pytest.raises(adapter.VerlRewardAbort, match="connection refused") as err:
        cerm_verl.compute_score("a", "resp", "", {"question": "q"}, cerm_backend="fake", cerm_model="verl-broken")
    assert isinstance(err.value.__cause__, BackendFailure)


def test_settings_and_inputs_are_checked():
    with pytest.raises(ValueError, match=r"unknown cerm reward_kwargs \['cerm_urll'\]"):
        cerm_verl.compute_score("a", "r", "", {"question": "q"}, cerm_urll="http://x")
    with pytest.raises(ValueError, match=r"put the user query in extra_info\['question'\]"):
        cerm_verl.compute_score("a", "r", "", {"index": 3}, cerm_backend="fake", cerm_model="verl-checks")
    with pytest.raises(ValueError, match="cerm_scale 'centered'"):
        cerm_verl.VerlSettings(scale="centered")  # type: ignore[arg-type]


def test_prepare_data_parquet_rows_feed_compute_score(tmp_path):
    """examples/verl/prepare_data.py -> parquet -> rows as verl reads them -> compute_score_batch."""
    import json
    import runpy

    import pandas as pd

    src = tmp_path / "prompts.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "Why is the sky blue?"},
        {"prompt": [{"role": "system", "content": "Terse."}, {"role": "user", "content": "Name a prime."}]}]) + "\n")
    argv = sys.argv
    sys.argv = ["prepare_data.py", "--input", str(src), "--output", str(tmp_path / "out"), "--test-only"]
    try:
        runpy.run_path(str(EXAMPLES / "verl" / "prepare_data.py"), run_name="__main__")
    finally:
        sys.argv = argv
    df = pd.read_parquet(tmp_path / "out" / "test.parquet")
    assert list(df.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert all(rm["ground_truth"] == "" for rm in df["reward_model"])  # verl reads it unconditionally
    rows = df.loc[[0, 0, 1, 1]]  # two rollouts per prompt
    out = [cerm_verl.compute_score(data_source=row["data_source"], solution_str=r,
                                   ground_truth=row["reward_model"]["ground_truth"], extra_info=row["extra_info"],
                                   cerm_backend="fake", cerm_model="verl-parquet")
           for (_, row), r in zip(rows.iterrows(), "abcd", strict=True)]
    assert [o["score"] for o in out] == [hash_score(r) / 10 for r in "abcd"]

    # under 10 prompts the test split still gets one (verl reads data.val_files); train keeps the rest
    sys.argv = ["prepare_data.py", "--input", str(src), "--output", str(tmp_path / "split")]
    try:
        runpy.run_path(str(EXAMPLES / "verl" / "prepare_data.py"), run_name="__main__")
    finally:
        sys.argv = argv
    assert [len(pd.read_parquet(tmp_path / "split" / f"{s}.parquet")) for s in ("train", "test")] == [1, 1]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    sys.argv = ["prepare_data.py", "--input", str(bad), "--output", str(tmp_path / "bad")]
    try:
        with pytest.raises(SystemExit, match=r"bad.jsonl:2:prompt: expected"):
            runpy.run_path(str(EXAMPLES / "verl" / "prepare_data.py"), run_name="__main__")
    finally:
        sys.argv = argv


def test_in_process_judge_gets_the_models_own_budgets():
    """The verl adapter builds its judge through config_for_model, as the CLI does: the embedded model gets
    192/160 tokens, not CE-RM-4B's 4096/8192; explicit cerm_*_max_new_tokens still win.
    """
    from cerm.reward.verl_adapter import VerlSettings, _LocalScorer

    embedded = _LocalScorer(VerlSettings(backend="fake", model="embedded"))
    assert (embedded.judge.config.criteria_max_new_tokens, embedded.judge.config.eval_max_new_tokens) == (192, 160)
    default = _LocalScorer(VerlSettings(backend="fake", model="some/model", eval_max_new_tokens=64))
    assert (default.judge.config.criteria_max_new_tokens, default.judge.config.eval_max_new_tokens) == (4096, 64)
    for scorer in (embedded, default):
        scorer.batcher.close()
