"""Training a CE-RM judge: data curation, SFT traces, SFT, and the two-stage rollout RL trainer.

``pairs.py`` (preference pairs) and ``recipe.py`` (the one recipe loader) are shared by the three pipelines
``curate/``, ``sft/`` and ``rl/``, which never import each other.
May import: the core and the backend seam; never ``bench``, ``reward`` or ``cli``.
"""
