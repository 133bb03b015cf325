"""Tests of cerm.train.sft (a package, so its test module names may repeat those of the other pipelines)."""
