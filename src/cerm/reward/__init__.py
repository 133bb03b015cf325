"""cerm as an RL reward: TRL reward functions, verl ``compute_score``, and the OpenRLHF-compatible server.

Only the light, framework-free pieces are imported here; ``cerm.reward.trl``, ``cerm.reward.verl`` and
``cerm.reward.server`` (FastAPI) are imported by name. The reward rule is ``scoring.py``.
May import: the core and the backend seam; never ``bench``, ``train`` or ``cli``.
"""

from cerm.reward.scoring import (
    BackendFailure,
    RewardConfig,
    RolloutRewards,
    map_scores,
    score_rollouts,
    strip_think,
)

__all__ = ["BackendFailure", "RewardConfig", "RolloutRewards", "map_scores", "score_rollouts", "strip_think"]
