"""Stage 2 of training a judge: the paper's two-stage rollout RL (criteria samples, then judgments).

``algorithm.py`` holds the maths (role rewards, grouped advantages, PPO-clip + KL); ``rollout.py`` the
two-stage sampling; ``engine_hf.py`` / ``engine_vllm.py`` generate; ``trainer.py`` runs steps.
May import: cerm core, ``cerm.train.pairs`` and ``cerm.train.recipe``; never curation, SFT, ``cerm.bench``
or ``cerm.reward`` (which is cerm as somebody else's reward, not training the judge).
"""
