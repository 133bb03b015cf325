"""Tests of cerm.train.curate (a package, so its test module names may repeat those of the other pipelines)."""
