"""cerm driven by verl's own code (verl==0.9.1, scripts/counterparts.txt): its reward-function loader, its
Hydra config with the example's overrides, and every reward-loop manager through its ``RewardLoopWorker``."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from support import free_port, scripted_judge_app, smollm2_tokenizer_dir
from verl import DataProto
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker, migrate_legacy_reward_impl
from verl.experimental.reward_loop.reward_manager import NaiveRewardManager
from verl.trainer.ppo.reward import get_custom_reward_fn, load_reward_manager, resolve_reward_manager_cls
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config

import cerm.reward.verl as cerm_verl
import cerm.reward.verl_adapter as adapter
from cerm.backends.fake import CANNED_CRITERIA, canned_evaluation

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "verl" / "run_grpo_cerm.sh"
VERL_CONFIG = Path(sys.modules["verl"].__file__).parent / "trainer" / "config"
MANAGERS = ["naive", "dapo", "gdpo", "rate_limited"]  # "remote" needs Ray actors: test_remote_manager_*


def verl_reward_fn(path: str, name: str, **reward_kwargs):
    """verl's own loader, as its reward loop calls it."""
    cfg = OmegaConf.create({"reward": {"custom_reward_function": {"path": path, "name": name,
                                                                  "reward_kwargs": reward_kwargs}}})
    return get_custom_reward_fn(cfg)


@pytest.mark.parametrize("path", [cerm_verl.__file__, "pkg://cerm.reward.verl", "pkg://cerm/reward/verl"])
def test_verls_loader_loads_the_file_and_the_package(path):
    """Fails on the old file: verl executes it without sys.modules, which broke its dataclasses."""
    fn = verl_reward_fn(path, "compute_score", cerm_backend="fake", cerm_model="verl-loader")
    out = fn(data_source="d", solution_str="Rayleigh scattering.", ground_truth="", extra_info={"question": "Why?"})
    assert set(out) == {"score", "cerm_parse_fail"} and 0.0 <= out["score"] <= 1.0
    assert not hasattr(cerm_verl, "compute_score_batch")  # verl 0.9's reward loop cannot call a batch function


def example_overrides(tmp_path: Path) -> list[str]:
    """Run the example script with a ``python`` on PATH that records the trainer's argv, as bash expands it."""
    out = tmp_path / "argv.txt"
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nif [ "$1" = "-m" ]; then shift 2; printf "%s\\n" "$@" > {out}; exit 0; fi\n'
                    f'exec {sys.executable} "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "CERM_URL": "http://judge:8000"}
    import subprocess

    subprocess.run(["bash", str(EXAMPLE)], check=True, env=env, timeout=60)
    return out.read_text().splitlines()


def verl_config(overrides: list[str], migrate: bool = True):
    """verl's shipped ppo_trainer config with ``overrides``; ``migrate``: moved from the legacy keys as verl's
    fully_async_main does (main_ppo reads ``reward.*`` as composed)."""
    with initialize_config_dir(config_dir=str(VERL_CONFIG), version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    return migrate_legacy_reward_impl(cfg) if migrate else cfg


def test_example_overrides_select_cerm_in_verls_own_config(tmp_path):
    """Fails on the old example: its top-level keys left verl 0.9 on its default reward."""
    overrides = example_overrides(tmp_path)
    as_main_ppo_reads_it = verl_config(overrides, migrate=False).reward.custom_reward_function
    assert (as_main_ppo_reads_it.path, as_main_ppo_reads_it.name) == (cerm_verl.__file__, "compute_score")
    cfg = verl_config(overrides)
    fn_cfg = cfg.reward.custom_reward_function
    assert (fn_cfg.path, fn_cfg.name) == (cerm_verl.__file__, "compute_score")
    assert fn_cfg.reward_kwargs.cerm_url == "http://judge:8000"
    assert resolve_reward_manager_cls(cfg) is NaiveRewardManager
    manager = load_reward_manager(cfg, tokenizer=None)
    assert manager.compute_score.args[0] is adapter.compute_score  # verl's partial around cerm's function
    # what verl's main_ppo checks before it starts Ray (the micro-batch keys among them)
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    # and what its workers assert once the batch reaches them (the old example passed the above, failed here)
    assert worker_micro_batches(cfg) == {"actor_update": 25 * 4, "log_prob": 25, "ref_log_prob": 25}


def worker_micro_batches(cfg) -> dict[str, int]:
    """Micro-batches per GPU and step of the actor update and the two log-prob passes, cut as verl 0.9.1's
    engine workers cut them (``verl/workers/engine_workers.py``, the FSDP engine's ``train_batch`` /
    ``infer_batch``; verl 0.9 has no separate ``fsdp_workers.py``), with verl's own splitting functions:

    - the trainer's dispatch gives each data-parallel rank ``train_batch_size x rollout.n / dp`` samples;
    - ``RayPPOTrainer._update_actor`` asks for mini-batches of ``ppo_mini_batch_size x rollout.n`` samples and
      ``TrainingWorker.train_mini_batch`` asserts they divide by ``dp``, then cuts its share with
      ``tensordict_utils.make_iterator`` (which asserts the mini-batch divides the share);
    - each mini-batch, and each log-prob pass over the whole share, goes through ``prepare_micro_batches``,
      which asserts ``micro_batch_size_per_gpu`` divides it (without ``use_dynamic_bsz``).
    """
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine.utils import prepare_micro_batches

    actor, rollout, ref = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout, cfg.actor_rollout_ref.ref
    assert not actor.use_dynamic_bsz, "with dynamic batches verl packs by tokens: no divisibility to check"
    dp = cfg.trainer.n_gpus_per_node * cfg.trainer.nnodes // actor.ulysses_sequence_parallel_size
    samples = cfg.data.train_batch_size * rollout.n
    assert samples % dp == 0, f"{samples} samples do not split over {dp} data-parallel ranks"
    share = TensorDict({"x": torch.zeros(samples // dp, 1)}, batch_size=[samples // dp])
    mini = actor.ppo_mini_batch_size * rollout.n
    assert mini % dp == 0, f"Got mini_batch_size={mini} and data parallel size {dp}"  # train_mini_batch's own

    def micro(batch, per_gpu: int) -> int:
        batch = batch.clone()
        tu.assign_non_tensor(batch, use_dynamic_bsz=False, micro_batch_size_per_gpu=per_gpu)
        return len(prepare_micro_batches(batch)[0])

    per_gpu = actor.ppo_micro_batch_size_per_gpu
    updates = sum(micro(mb, per_gpu) for mb in tu.make_iterator(share, mini_batch_size=mini // dp, epochs=1))
    return {"actor_update": updates * actor.ppo_epochs,
            "log_prob": micro(share, rollout.log_prob_micro_batch_size_per_gpu),
            "ref_log_prob": micro(share, ref.log_prob_micro_batch_size_per_gpu)}


def test_the_worker_arithmetic_refuses_a_micro_batch_that_does_not_divide_the_mini_batch(tmp_path):
    """The old example: 50 prompts x 8 rollouts / 8 GPUs = 50 samples per GPU, micro-batch 4."""
    overrides = [o for o in example_overrides(tmp_path) if "ppo_micro_batch_size_per_gpu" not in o]
    cfg = verl_config([*overrides, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4"])
    with pytest.raises(AssertionError, match="divisible by force_group_size \\* micro_batch_size_per_gpu"):
        worker_micro_batches(cfg)


def worker_for(manager: str, fn_name: str, **reward_kwargs) -> RewardLoopWorker:
    kwargs = [f"+reward.custom_reward_function.reward_kwargs.{k}={v}" for k, v in reward_kwargs.items()]
    cfg = verl_config([f"actor_rollout_ref.model.path={smollm2_tokenizer_dir()}", f"reward.reward_manager.name={manager}",
                       f"reward.custom_reward_function.path={cerm_verl.__file__}",
                       f"reward.custom_reward_function.name={fn_name}", *kwargs])
    return RewardLoopWorker(cfg)


def rollout_batch(tokenizer, questions: list[str], responses: list[str]) -> DataProto:
    """A rollout batch as verl's agent loop hands it to the reward loop (right-padded responses)."""
    ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
    width = max(map(len, ids))
    resp = torch.tensor([x + [tokenizer.eos_token_id or 0] * (width - len(x)) for x in ids])
    prompts = torch.ones(len(ids), 3, dtype=torch.long)
    mask = torch.cat([torch.ones(len(ids), 3, dtype=torch.long),
                      torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])], dim=1)
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": resp, "attention_mask": mask},
        non_tensors={"data_source": np.array(["cerm"] * len(ids), dtype=object),
                     "reward_model": np.array([{"ground_truth": ""}] * len(ids), dtype=object),
                     "extra_info": np.array([{"question": q} for q in questions], dtype=object)})


def run(worker: RewardLoopWorker, data: DataProto) -> list[dict]:
    return worker.loop.run_until_complete(worker.compute_score_batch(data))


@pytest.mark.parametrize("fn_name", ["compute_score", "compute_score_async"])
@pytest.mark.parametrize("manager", MANAGERS)
def test_every_reward_loop_manager_scores_and_stops_on_a_judge_failure(serve_app, manager, fn_name):
    """Fails on the old adapter under rate_limited: verl caught the judge's error and wrote reward 0.0."""
    with serve_app(scripted_judge_app()) as srv:
        worker = worker_for(manager, fn_name, cerm_url=srv.url, cerm_failure_reward=-0.5, cerm_retries=0)
        data = rollout_batch(worker.input_tokenizer, ["Why?", "Why?", "How?"], ["fine", "garbled", "fine too"])
        out = run(worker, data)
        assert [o["reward_score"] for o in out] == [0.7, -0.5, 0.7]
        assert [o["reward_extra_info"]["cerm_parse_fail"] for o in out] == [0.0, 1.0, 0.0]
        mixed = rollout_batch(worker.input_tokenizer, ["Why?", "Why?"], ["fine", "explode"])
        with pytest.raises(adapter.VerlRewardAbort, match="judge crashed"):
            run(worker, mixed)


@pytest.mark.parametrize("manager", ["naive", "rate_limited"])
def test_a_judge_server_down_stops_the_run(manager):
    """The issue's case: with the server down, rate_limited gave every sample 0.0 and training went on."""
    down = worker_for(manager, "compute_score_async", cerm_url=f"http://127.0.0.1:{free_port()}", cerm_retries=0)
    with pytest.raises(adapter.VerlRewardAbort, match="the judge failed"):
        run(down, rollout_batch(down.input_tokenizer, ["Why?"], ["fine"]))


def test_genrm_router_model_name_comes_from_v1_models(serve_app):
    """Fails on the old adapter: it sent model=PKU-ONELab/CE-RM-4B to a router serving another name."""
    from fastapi import FastAPI, HTTPException

    grm = FastAPI()
    seen: list[str] = []

    @grm.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "/ckpt/ce-rm-4b", "object": "model"}]}

    @grm.post("/v1/chat/completions")
    async def chat(body: dict) -> dict:
        seen.append(body["model"])
        if body["model"] != "/ckpt/ce-rm-4b":
            raise HTTPException(404, f"model {body['model']} does not exist")
        text = CANNED_CRITERIA if len(body["messages"]) == 1 else canned_evaluation(4)
        return {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5}}

    with serve_app(grm) as srv:
        fn = verl_reward_fn(cerm_verl.__file__, "compute_score")
        out = [fn(data_source="d", solution_str=f"r{i}", ground_truth="", extra_info={"question": "Why?"},
                  reward_router_address=f"127.0.0.1:{srv.port}", reward_model_tokenizer=None) for i in range(2)]
    assert [o["score"] for o in out] == [0.4, 0.4]
    assert set(seen) == {"/ckpt/ce-rm-4b"}


def test_remote_manager_calls_cerm_in_its_worker_class(serve_app):
    """verl's remote manager runs the function in ``RewardComputeWorker`` Ray actors (a Ray cluster hangs on
    these 2-core machines): drive that actor's own class in process, with verl's own partial."""
    from verl.experimental.reward_loop.reward_manager.remote import RewardComputeWorker

    actor_cls = RewardComputeWorker.__ray_actor_class__  # the class the actor process instantiates
    with serve_app(scripted_judge_app()) as srv:
        fn = verl_reward_fn(cerm_verl.__file__, "compute_score", cerm_url=srv.url, cerm_retries=0)
        worker = actor_cls(fn)
        call = {"data_source": "cerm", "ground_truth": "", "extra_info": {"question": "Why?"}}
        assert worker.compute_score(solution_str="fine", **call) == {"score": 0.7, "cerm_parse_fail": 0.0}
        with pytest.raises(adapter.VerlRewardAbort, match="judge crashed"):
            worker.compute_score(solution_str="explode", **call)
    with pytest.raises(AssertionError, match="Async reward score is not supported in remote"):
        worker_for("remote", "compute_score_async", cerm_url="http://127.0.0.1:1")


def test_verls_dataloader_sends_each_prompt_ahead_to_the_judge(tmp_path, serve_app):
    """data.custom_cls = cerm's CriteriaPrefetchDataset, loaded by verl's own get_dataset_class and iterated by a
    torch DataLoader with verl's collate_fn: every prompt reaches the server's /v1/criteria as its batch is
    loaded, and the reward for it later finds its criteria generated (no second generation).
    """
    import json
    import runpy
    import time

    import httpx
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import collate_fn, get_dataset_class

    prompts = [f"Question {i}: why is the sky blue?" for i in range(6)]
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    argv = sys.argv
    sys.argv = ["prepare_data.py", "--input", str(src), "--output", str(tmp_path / "data"), "--test-only"]
    try:
        runpy.run_path(str(EXAMPLE.with_name("prepare_data.py")), run_name="__main__")
    finally:
        sys.argv = argv
    with serve_app(scripted_judge_app()) as srv:
        data_config = OmegaConf.create({"custom_cls": {"path": "pkg://cerm.reward.verl_data",
                                                       "name": "CriteriaPrefetchDataset"},
                                        "cerm_url": srv.url, "max_prompt_length": 256, "prompt_key": "prompt"})
        cls = get_dataset_class(data_config)
        dataset = cls(data_files=str(tmp_path / "data" / "test.parquet"),
                      tokenizer=AutoTokenizer.from_pretrained(smollm2_tokenizer_dir()), config=data_config)
        batches = list(DataLoader(dataset, batch_size=3, collate_fn=collate_fn))
        assert cls.__name__ == "CriteriaPrefetchDataset" and sum(len(b["raw_prompt"]) for b in batches) == 6

        def metric(name: str) -> float:
            from prometheus_client.parser import text_string_to_metric_families

            text = httpx.get(f"{srv.url}/metrics").text
            return next(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)

        deadline = time.monotonic() + 20
        while metric("cerm_criteria_generated_total") < 6:
            assert time.monotonic() < deadline, "the prefetched criteria were never generated"
            time.sleep(0.05)
        assert metric("cerm_criteria_prefetched_total") == 6
        fn = verl_reward_fn("pkg://cerm.reward.verl", "compute_score", cerm_url=srv.url)
        out = fn(data_source="cerm", solution_str="Rayleigh scattering.", ground_truth="",
                 extra_info={"question": prompts[0]})
        assert out["score"] == 0.7
        assert metric("cerm_criteria_generated_total") == 6  # the reward's criteria were already there
