"""Training a CE-RM judge: data curation, SFT traces, SFT, and the two-stage rollout RL trainer."""
