"""Data curation for training a judge: load, filter, dedup, pass-rate select, split, report.

May import: cerm core (types, prompts, judge, cache, backends) and ``cerm.train.pairs``; never the SFT or
RL trainers, ``cerm.bench`` or ``cerm.reward``.
"""
