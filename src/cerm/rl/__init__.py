"""cerm as an RL reward: TRL reward functions, verl ``compute_score``, and the OpenRLHF-compatible server.

Only the light, framework-free pieces are imported here; ``cerm.rl.trl``, ``cerm.rl.verl`` and
``cerm.rl.server`` (FastAPI) are imported by name.
"""

from cerm.rl.rewards import (
    BackendFailure,
    RewardConfig,
    RolloutRewards,
    map_scores,
    score_rollouts,
    strip_think,
)

__all__ = ["BackendFailure", "RewardConfig", "RolloutRewards", "map_scores", "score_rollouts", "strip_think"]
