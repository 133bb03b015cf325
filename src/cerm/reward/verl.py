"""The file verl loads: ``reward.custom_reward_function.path=<this file>`` (or ``pkg://cerm.reward.verl``).

verl >= 0.7 executes a reward file by path without registering it in ``sys.modules``, so this file defines
nothing itself (a dataclass defined here would fail to build); it imports the installed implementation,
``cerm.reward.verl_adapter``, whose docstring lists the settings. Both ways of loading share one judge.
"""

from cerm.reward.verl_adapter import (
    VerlRewardAbort,
    VerlSettings,
    compute_score,
    compute_score_async,
    served_model,
)

__all__ = ["VerlRewardAbort", "VerlSettings", "compute_score", "compute_score_async", "served_model"]
