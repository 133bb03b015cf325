#!/usr/bin/env bash
# GRPO in verl with cerm as the reward (the paper's downstream setup: Qwen3-8B policy, group 8, 250 steps).
# Needs GPUs and verl 0.9 (tested against verl==0.9.1); cerm only supplies the reward function file and the
# reward server. verl 0.9 reads the reward settings under reward.* only (older top-level keys are ignored).
#
#   1. data:   python examples/verl/prepare_data.py --input tulu3_prompts.jsonl --output data/cerm_grpo
#   2. judge:  cerm serve --backend vllm --model PKU-ONELab/CE-RM-4B --port 8000 --cache runs/cerm.sqlite \
#                  --eval-max-new-tokens 4096 --token "$CERM_SERVER_TOKEN"
#   3. train:  bash examples/verl/run_grpo_cerm.sh
#
# Reward managers: every manager of verl's reward loop (naive below, dapo, gdpo, rate_limited, remote) calls
# compute_score once per sample; the server's dynamic batcher and criteria cache keep the cost at one criteria
# call per prompt. reward.custom_reward_function.name=compute_score_async runs the calls as coroutines (all
# managers but remote). A judge failure stops the run (VerlRewardAbort), under every manager: never reward 0.
# Without cerm_url the judge runs in each reward worker (cerm_backend / cerm_model / cerm_cache kwargs).
#
# Batch arithmetic (verl's workers assert it; tests/reward/test_verl_real.py runs it): 200 prompts x 8 rollouts
# = 1,600 samples, 200 per GPU; a mini-batch of 50 prompts x 8 = 400 samples is 50 per GPU, which the actor's
# micro-batch must divide (2, 5, 10, 25 or 50; 4 does not); the log-prob passes read 200 per GPU in 8s.
set -euo pipefail

CERM_URL=${CERM_URL:-http://127.0.0.1:8000}
DATA=${DATA:-data/cerm_grpo}
POLICY=${POLICY:-Qwen/Qwen3-8B}
REWARD_FILE=$(python -c "import cerm.reward.verl as m; print(m.__file__)")

python -m verl.trainer.main_ppo \
    algorithm.adv_estimator=grpo \
    data.train_files="$DATA/train.parquet" \
    data.val_files="$DATA/test.parquet" \
    data.train_batch_size=200 \
    data.max_prompt_length=2048 \
    data.max_response_length=4096 \
    actor_rollout_ref.model.path="$POLICY" \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=50 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 \
    actor_rollout_ref.actor.use_kl_loss=True \
    actor_rollout_ref.actor.kl_loss_coef=0.001 \
    actor_rollout_ref.actor.kl_loss_type=low_var_kl \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=8 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8 \
    reward.reward_manager.name=naive \
    reward.custom_reward_function.path="$REWARD_FILE" \
    reward.custom_reward_function.name=compute_score \
    +reward.custom_reward_function.reward_kwargs.cerm_url="$CERM_URL" \
    +reward.custom_reward_function.reward_kwargs.cerm_token="${CERM_SERVER_TOKEN:-}" \
    +reward.custom_reward_function.reward_kwargs.cerm_failure_reward=0.0 \
    trainer.total_training_steps=250 \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.logger='["console"]' \
    trainer.project_name=cerm \
    trainer.experiment_name=grpo-qwen3-8b-cerm "$@"
