"""Tests of cerm.train.rl (a package, so its test module names may repeat those of the other pipelines)."""
