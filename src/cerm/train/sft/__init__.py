"""Stage 1 of training a judge: distill teacher judgments into SFT rows, then supervised fine-tuning.

May import: cerm core, ``cerm.train.pairs`` and ``cerm.train.recipe``; never curation, RL, ``cerm.bench`` or
``cerm.reward``.
"""
