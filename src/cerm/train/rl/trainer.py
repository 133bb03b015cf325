"""The two-stage rollout RL trainer (``cerm train rl``; docs/training.md §3). Reads top to bottom.

One step, per preference pair: C criteria rollouts, then J judgment rollouts per (criteria, response)
(``rollout.py``, on the engine of ``engine_hf.py`` or ``engine_vllm.py``) -> rewards per role and advantages
in three groups (``algorithm.py``) -> old and reference log-probs (``logprobs.py``) -> ``num_mini_batches``
PPO-clip updates (``algorithm.py``'s loss), each over whole pairs; metrics in ``metrics.py``, the model, the
optimiser and the engine built by ``setup.py``.

Departures from the paper, whose equations are not public (all ours, [R]): the reward formulas and their
tie / invalid conventions, population-std normalisation, k3 KL in the loss, token-mean-then-trajectory-mean
aggregation, and the verl-style reading of "4 mini-batches per step" (pairs_per_step split in 4 updates).
Old log-probs: the first mini-batch is still on-policy, so its old log-probs are the current ones (ratio
exactly 1, whatever the engine's numerics). Later mini-batches take the engine's rollout log-probs
(``old_logprobs=rollout``: no extra forward pass) or recompute them with the policy (``recompute``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import gather_object, set_seed

from cerm import __version__
from cerm.prompts import PROMPT_VERSION
from cerm.train.launch import check_distributed_type, check_processes
from cerm.train.pairs import PreferencePair
from cerm.train.rl.algorithm import RoleRewardConfig, ScoredTrajectories, ppo_loss, score_pair_rollouts
from cerm.train.rl.config import RLConfig
from cerm.train.rl.data import PairStream, read_pairs, split_holdout
from cerm.train.rl.logprobs import collate, completion_logprobs, rollout_logprobs
from cerm.train.rl.metrics import (
    Callback,
    MetricsLogger,
    describe,
    pairwise_accuracy,
    rollout_metrics,
    tie_rate,
)
from cerm.train.rl.rollout import ChatLayout, Trajectory, rollout_pairs
from cerm.train.rl.setup import (
    build_engine,
    build_optimizer,
    load_policy,
    load_reference,
    load_tokenizer,
    stop_token_ids,
)
from cerm.types import SamplingParams

logger = logging.getLogger(__name__)

ROLES = ("criteria", "chosen", "rejected")


@dataclass
class TrainerState:
    """What a checkpoint needs beyond model/optimiser/scheduler/RNG (saved by accelerate)."""

    step: int = 0
    consumed_pairs: int = 0  # the data position: the stream order is a pure function of (seed, epoch)
    status_counts: dict[str, int] = field(default_factory=dict)  # judgment parse statuses over the run

    def state_dict(self) -> dict[str, Any]:
        """The state as a dict for a checkpoint."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state from a checkpoint's dict."""
        self.step, self.consumed_pairs = int(state["step"]), int(state["consumed_pairs"])
        self.status_counts = dict(state["status_counts"])


class RLTrainer:
    """Owns one run: model, reference, optimiser, engine, data stream, checkpoints and metrics."""

    def __init__(self, cfg: RLConfig, callbacks: Sequence[Callback] = ()) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        world = PartialState(cpu=cfg.use_cpu).num_processes
        check_processes(world)  # accelerate would otherwise run N independent copies, each writing the outputs
        if cfg.pairs_per_step % (world * cfg.num_mini_batches):
            raise ValueError(f"pairs_per_step ({cfg.pairs_per_step}) must be divisible by processes ({world}) x "
                             f"num_mini_batches ({cfg.num_mini_batches}) so every update sees whole pairs.")
        self.pairs_per_update = cfg.pairs_per_step // world // cfg.num_mini_batches  # per process
        traj_per_update = self.pairs_per_update * cfg.trajectories_per_pair
        self.grad_accum = math.ceil(traj_per_update / cfg.micro_batch_size)
        # the data first: a bad row fails in a second, before minutes of model loading
        train = read_pairs(cfg.train_data)
        self.eval_pairs: list[PreferencePair] = read_pairs(cfg.eval_data) if cfg.eval_data else []
        if cfg.eval_holdout:
            train, self.eval_pairs = split_holdout(train, cfg.eval_holdout, cfg.seed)
        self.stream = PairStream(train, cfg.seed)
        self.num_train_pairs = len(train)
        self.accelerator = Accelerator(cpu=cfg.use_cpu, gradient_accumulation_steps=self.grad_accum,
                                       mixed_precision=cfg.mixed_precision,
                                       log_with=cfg.report_to or None, project_dir=str(self.out))
        check_distributed_type(self.accelerator.distributed_type.value)  # a recipe accelerate dropped is said
        set_seed(cfg.seed)
        self.tokenizer = load_tokenizer(cfg)
        model = load_policy(cfg)
        self.stop_ids = stop_token_ids(self.tokenizer, model)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.stop_ids)
        optimizer, self.scheduler = build_optimizer(cfg, model)
        ds = self.accelerator.state.deepspeed_plugin
        if ds is not None:  # DeepSpeed sizes its batches from a dataloader, and this loop passes none
            ds.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.micro_batch_size
            ds.deepspeed_config["gradient_clipping"] = cfg.max_grad_norm
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.ref_model = load_reference(cfg, self.accelerator)
        self.state = TrainerState()
        self.last_scored: ScoredTrajectories | None = None
        self.accelerator.register_for_checkpointing(self.scheduler, self.state)
        self.engine = build_engine(cfg, self.model, self.accelerator, self.tokenizer, self.stop_ids)
        self._engine_stale = True  # weights changed since the engine last saw them
        self._warned_recompute = False
        self.layout = ChatLayout(self.tokenizer, self.stop_ids, cfg.chat_template_kwargs)
        self.reward_cfg = RoleRewardConfig(cfg.reward_mode, cfg.tie_credit, cfg.format_penalty)
        self.criteria_params = SamplingParams(cfg.temperature, cfg.top_p, cfg.criteria_max_new_tokens)
        self.eval_params = SamplingParams(cfg.temperature, cfg.top_p, cfg.eval_max_new_tokens)
        main = self.accelerator.is_main_process
        # metrics are reduced over processes (step()), so only the main one writes and reports them
        self.metrics = MetricsLogger(self.out / "metrics.jsonl" if main else None, self.accelerator,
                                     callbacks if main else ())
        if main and cfg.report_to:
            self.accelerator.init_trackers("cerm-rl", config={k: v for k, v in cfg.to_dict().items()
                                                              if isinstance(v, (int, float, str, bool))})

    # ---------------------------------------------------------------- one RL step
    def step(self) -> dict[str, float]:
        """One RL step: roll out, reward, then the PPO updates; returns the step's metrics."""
        cfg, acc = self.cfg, self.accelerator
        pairs = self.stream.take_shard(self.state.consumed_pairs, cfg.num_mini_batches, self.pairs_per_update,
                                       acc.process_index, acc.num_processes)
        self.state.consumed_pairs += cfg.pairs_per_step
        criteria_params, eval_params = self.criteria_params, self.eval_params
        if cfg.seeded_rollouts:  # a fresh seed per step; the engine derives one per prompt copy from it
            criteria_params = replace(criteria_params, seed=cfg.seed * 1_000_003 + self.state.step)
            eval_params = replace(eval_params, seed=cfg.seed * 1_000_003 + self.state.step)

        t0 = time.perf_counter()
        self._sync_engine()
        rollouts = rollout_pairs(pairs, self.engine, self.layout, cfg.num_criteria, cfg.num_judgments,
                                 criteria_params, eval_params)
        t1 = time.perf_counter()
        scored = score_pair_rollouts(rollouts, self.reward_cfg, cfg.advantage_grouping)
        self.last_scored = scored  # kept for inspection (tests, perf/rl_step.py); replaced every step
        t2 = time.perf_counter()
        updates = self._minibatches(scored)
        old, ref = self._reference_logprobs(scored, updates)
        t3 = time.perf_counter()
        stats = self._update(scored, updates, old, ref)
        t4 = time.perf_counter()

        # every metric covers the whole step: gathered from all processes, so each keeps the same numbers
        all_rollouts = gather_object(rollouts) if acc.num_processes > 1 else rollouts
        all_scored = [(t.role, t.status, r, a) for t, r, a in zip(scored.trajectories, scored.rewards,
                                                                  scored.advantages, strict=True)]
        if acc.num_processes > 1:
            all_scored = gather_object(all_scored)
        for _, status, _, _ in all_scored:
            if status is not None:
                self.state.status_counts[status.value] = self.state.status_counts.get(status.value, 0) + 1
        generated = sum(len(t.completion_ids) for r in all_rollouts for t in r.trajectories())
        trained = sum(t.length for r in all_rollouts for t in r.trajectories())
        metrics = {**rollout_metrics(all_rollouts), **stats,
                   "time/rollout_s": t1 - t0, "time/reward_s": t2 - t1, "time/logprobs_s": t3 - t2,
                   "time/update_s": t4 - t3, "time/step_s": t4 - t0,
                   "throughput/rollout_tokens_per_s": generated / max(t1 - t0, 1e-9),
                   "throughput/train_tokens_per_s": trained / max(t4 - t2, 1e-9),
                   "lr": self.scheduler.get_last_lr()[0], "data/epoch": self.state.consumed_pairs / self.num_train_pairs}
        for role in ROLES:
            metrics |= describe(f"reward/{role}", [r for t_role, _, r, _ in all_scored if t_role == role])
            metrics |= describe(f"advantage/{role}", [a for t_role, _, _, a in all_scored if t_role == role])
        self.state.step += 1
        return metrics

    def _minibatches(self, scored: ScoredTrajectories) -> list[list[list[int]]]:
        """Trajectory indices as updates -> micro-batches; an update holds all trajectories of its pairs.

        Micro-batches group trajectories of similar length (sorted) so left padding wastes little.
        """
        by_pair: dict[int, list[int]] = {}
        for i, t in enumerate(scored.trajectories):
            by_pair.setdefault(t.pair_index, []).append(i)
        pair_ids = sorted(by_pair)
        updates = []
        for u in range(self.cfg.num_mini_batches):
            chunk = pair_ids[u * self.pairs_per_update:(u + 1) * self.pairs_per_update]
            idx = sorted((i for p in chunk for i in by_pair[p]), key=lambda i: scored.trajectories[i].length)
            mb = self.cfg.micro_batch_size
            updates.append([idx[j:j + mb] for j in range(0, len(idx), mb)])
        return updates

    @torch.no_grad()
    def _reference_logprobs(self, scored: ScoredTrajectories, updates: list[list[list[int]]]) -> tuple[dict, dict]:
        """Old log-probs (updates after the first, which is on-policy) and reference log-probs per micro-batch."""
        old: dict[tuple[int, int], torch.Tensor] = {}
        ref: dict[tuple[int, int], torch.Tensor] = {}
        device = self.accelerator.device
        self.model.eval()
        for u, micro_batches in enumerate(updates):
            for j, micro in enumerate(micro_batches):
                trajectories = [scored.trajectories[i] for i in micro]
                sampled = self._rollout_old_logprobs(trajectories) if u > 0 else None
                if sampled is not None:
                    old[u, j] = sampled.to(device)
                recompute = u > 0 and sampled is None
                if recompute or self.cfg.kl_coef > 0:
                    batch = collate(trajectories, self.pad_id).to(device)
                    if recompute:
                        old[u, j] = completion_logprobs(self.model, batch, self.cfg.temperature)
                    if self.cfg.kl_coef > 0:
                        ref[u, j] = self._ref_logprobs(batch)
        return old, ref

    def _rollout_old_logprobs(self, trajectories: list[Trajectory]) -> torch.Tensor | None:
        """The engine's log-probs as the old ones (``old_logprobs=rollout``), or None to recompute them."""
        if self.cfg.old_logprobs != "rollout":
            return None
        sampled = rollout_logprobs(trajectories)
        if sampled is None and not self._warned_recompute:
            self._warned_recompute = True
            logger.warning("old_logprobs=rollout but the engine gave no log-probs for some trajectories (vLLM "
                           "with top_p < 1 gives none): their micro-batches are recomputed.")
        return sampled

    def _ref_logprobs(self, batch: Any) -> torch.Tensor:
        if self.ref_model is not None:
            return completion_logprobs(self.ref_model, batch, self.cfg.temperature)
        with self.accelerator.unwrap_model(self.model).disable_adapter():  # LoRA: the base is the reference
            return completion_logprobs(self.model, batch, self.cfg.temperature)

    def _update(self, scored: ScoredTrajectories, updates: list[list[list[int]]], old: dict, ref: dict
                ) -> dict[str, float]:
        cfg, acc = self.cfg, self.accelerator
        sums = {"loss/policy": 0.0, "loss/kl": 0.0, "loss/clip_fraction": 0.0, "loss/ratio_mean": 0.0}
        grad_norms, count = [], 0
        self.model.train()
        for u, micro_batches in enumerate(updates):
            total = sum(len(m) for m in micro_batches)
            for j, micro in enumerate(micro_batches):
                with acc.accumulate(self.model):
                    batch = collate([scored.trajectories[i] for i in micro], self.pad_id).to(acc.device)
                    logp = completion_logprobs(self.model, batch, cfg.temperature)
                    adv = torch.tensor([scored.advantages[i] for i in micro], device=acc.device)
                    out = ppo_loss(logp, old.get((u, j), logp.detach()), ref.get((u, j)), adv,
                                   batch.completion_mask, cfg.clip_eps, cfg.kl_coef)
                    # out.loss is this micro-batch's trajectory mean; accelerate divides by grad_accum, so this
                    # weighting makes the accumulated gradient the mean over the update's trajectories
                    acc.backward(out.loss * (len(micro) / total) * self.grad_accum)
                    if acc.sync_gradients:
                        norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                        if norm is not None:  # DeepSpeed clips inside its engine and returns None
                            grad_norms.append(float(norm))
                    self.optimizer.step()
                    if acc.sync_gradients:
                        self.scheduler.step()
                    self.optimizer.zero_grad()
                for key, value in zip(sums, (out.policy_loss, out.kl, out.clip_fraction, out.ratio_mean), strict=True):
                    sums[key] += value * len(micro)
                count += len(micro)
        self._engine_stale = True
        if acc.num_processes > 1:  # trajectory means over every process (the norms are already global)
            parts = gather_object([(sums, count)])
            sums = {k: sum(p[0][k] for p in parts) for k in sums}
            count = sum(p[1] for p in parts)
        return {k: v / count for k, v in sums.items()} | describe("grad_norm", grad_norms)

    def _sync_engine(self) -> None:
        if self._engine_stale:
            self.engine.sync_weights()
            self._engine_stale = False

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Greedy protocol judging of the held-out pairs: one criteria set, one judgment per response."""
        acc = self.accelerator
        local = self.eval_pairs[acc.process_index::acc.num_processes]
        self._sync_engine()
        greedy_c = SamplingParams(0.0, 1.0, self.cfg.criteria_max_new_tokens)
        greedy_e = SamplingParams(0.0, 1.0, self.cfg.eval_max_new_tokens)
        rollouts = rollout_pairs(local, self.engine, self.layout, 1, 1, greedy_c, greedy_e) if local else []
        scores = gather_object([(r.chosen[0].score, r.rejected[0].score) for r in rollouts])
        chosen, rejected = [s[0] for s in scores], [s[1] for s in scores]
        missing = sum(s is None for s in chosen + rejected)
        return {"eval/pairwise_accuracy": pairwise_accuracy(chosen, rejected),
                "eval/tie_rate": tie_rate(chosen, rejected),
                "eval/parse_failure_rate": missing / max(1, 2 * len(chosen)), "eval/num_pairs": float(len(chosen))}

    # ---------------------------------------------------------------- the run
    def train(self) -> dict[str, Any]:
        """Run (or resume) to ``max_steps``; returns the summary also written to ``run.json``."""
        cfg = self.cfg
        if cfg.resume_from:
            self.resume(cfg.resume_from)
        self._write_run_json({})
        evals: dict[int, dict[str, float]] = {}
        if self.eval_pairs and self.state.step == 0:
            evals[0] = self._log_eval()
        while self.state.step < cfg.max_steps:
            metrics = self.step()
            self.metrics.log(self.state.step, metrics)
            # debug: `cerm train rl` prints each step's row already
            logger.debug("step %d: rollout acc %.3f, parse failures %.3f, kl %.4g, %.1fs", self.state.step,
                         metrics["rollout/pairwise_accuracy"], metrics["rollout/parse_failure_rate"],
                         metrics["loss/kl"], metrics["time/step_s"])
            if self.eval_pairs and cfg.eval_every and self.state.step % cfg.eval_every == 0:
                evals[self.state.step] = self._log_eval()
            if cfg.save_every and self.state.step % cfg.save_every == 0:
                self.save_checkpoint()
        if self.eval_pairs and self.state.step not in evals:
            evals[self.state.step] = self._log_eval()
        self.save_checkpoint()
        self.export_final()
        summary = self._write_run_json(evals)
        self.metrics.close()
        self.accelerator.end_training()
        return summary

    def _log_eval(self) -> dict[str, float]:
        result = self.evaluate()
        self.metrics.log(self.state.step, result)
        logger.info("eval at step %d: pairwise accuracy %.3f", self.state.step, result["eval/pairwise_accuracy"])
        return result

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_dir(self, step: int) -> Path:
        """Where the checkpoint of ``step`` is written."""
        return self.out / "checkpoints" / f"step-{step:06d}"

    def save_checkpoint(self) -> Path:
        """Model, optimiser, scheduler, every process's RNG states and the data position, via accelerate."""
        path = self.checkpoint_dir(self.state.step)
        self.accelerator.save_state(str(path))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process and self.cfg.save_total_limit:
            done = sorted(p for p in (self.out / "checkpoints").glob("step-*") if p.is_dir())
            for old in done[: -self.cfg.save_total_limit]:
                shutil.rmtree(old)
        return path

    def resume(self, where: str) -> None:
        """Resume from ``where``: "auto" (the latest checkpoint in output_dir) or a checkpoint directory."""
        path = Path(where)
        if where == "auto":
            found = sorted((self.out / "checkpoints").glob("step-*"))
            if not found:
                logger.info("resume_from=auto: no checkpoint in %s, starting fresh", self.out)
                return
            path = found[-1]
        if not path.is_dir():
            raise FileNotFoundError(f"resume_from={where!r}: checkpoint directory {path} does not exist.")
        self.accelerator.load_state(str(path))
        self._engine_stale = True
        logger.info("resumed from %s at step %d (%d pairs consumed)", path, self.state.step,
                    self.state.consumed_pairs)

    def export_final(self) -> Path:
        """``output_dir/final``: a plain HF model directory (LoRA merged) plus the tokenizer, loadable by cerm."""
        final = self.out / "final"
        acc = self.accelerator
        state_dict = acc.get_state_dict(self.model)  # gathers shards under ZeRO-3 / FSDP
        model = acc.unwrap_model(self.model)
        if acc.is_main_process:
            if self.cfg.use_lora:
                model.save_pretrained(final / "adapter", state_dict=state_dict)
                from peft import AutoPeftModelForCausalLM

                merged = AutoPeftModelForCausalLM.from_pretrained(final / "adapter").merge_and_unload()
                merged.save_pretrained(final)
            else:
                model.save_pretrained(final, state_dict=state_dict)
            self.tokenizer.save_pretrained(final)
        acc.wait_for_everyone()
        return final

    def _write_run_json(self, evals: dict[int, dict[str, float]]) -> dict[str, Any]:
        data = Path(self.cfg.train_data).read_bytes()
        summary = {
            "cerm_version": __version__, "prompt_version": PROMPT_VERSION, "config": self.cfg.to_dict(),
            "world_size": self.accelerator.num_processes,
            "train_data": {"path": self.cfg.train_data, "sha256": hashlib.sha256(data).hexdigest(),
                           "num_pairs": self.num_train_pairs},
            "num_eval_pairs": len(self.eval_pairs), "step": self.state.step,
            "judgment_statuses": self.state.status_counts, "eval": {str(k): v for k, v in evals.items()},
        }
        if self.accelerator.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "run.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
        return summary


def train_rl(cfg: RLConfig, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Build a trainer from ``cfg`` and run it to the end."""
    return RLTrainer(cfg, callbacks).train()

