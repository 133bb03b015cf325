"""The one recipe loader (cerm.train.recipe): the same YAML rules and errors for the SFT and RL recipes."""

from __future__ import annotations

import pytest

from cerm.train.recipe import read_value
from cerm.train.rl.config import load_rl_config
from cerm.train.sft.config import SFTRunConfig

RL_BASE = "model: m\ntrain_data: t.jsonl\noutput_dir: o\n"
SFT_BASE = "model: m\ntrain_data: t.jsonl\n"


def test_yaml_fixes_apply_to_files_and_overrides():
    assert read_value("1e-2") == 0.01 and read_value("2E-1") == 0.2 and read_value("-3e5") == -3e5
    assert read_value("no") == "no" and read_value("on") == "on" and read_value("true") is True
    assert read_value("16") == 16 and read_value("[a, b]") == ["a", "b"] and read_value("") is None


def test_sft_and_rl_read_one_file_the_same_way(tmp_path):
    rl = tmp_path / "rl.yaml"
    rl.write_text(RL_BASE + "learning_rate: 1e-5\nmixed_precision: no\nuse_lora: true\n")
    cfg = load_rl_config(rl)
    assert (cfg.learning_rate, cfg.mixed_precision, cfg.use_lora) == (1e-5, "no", True)
    sft = tmp_path / "sft.yaml"
    sft.write_text(SFT_BASE + "learning_rate: 1e-5\nsave_strategy: no\nuse_lora: true\n")
    cfg = SFTRunConfig.from_sources(sft)  # save_strategy: no was read as False before
    assert (cfg.learning_rate, cfg.save_strategy, cfg.use_lora) == (1e-5, "no", True)
    assert SFTRunConfig.from_sources(sft, ["learning_rate=2e-6"]).learning_rate == 2e-6


def test_errors_name_file_line_and_field_for_sft_too(tmp_path):
    sft = tmp_path / "sft.yaml"
    sft.write_text(SFT_BASE + "\nbatch_size: lots\n")
    with pytest.raises(ValueError, match=r"sft\.yaml:4: field 'batch_size'"):
        SFTRunConfig.from_sources(sft)
    sft.write_text(SFT_BASE + "lora: true\n")
    with pytest.raises(ValueError, match=r"sft\.yaml:3: key 'lora' is now called 'use_lora'"):
        SFTRunConfig.from_sources(sft)
    with pytest.raises(ValueError, match=r"override 'lora=true': key 'lora' is now called 'use_lora'"):
        SFTRunConfig.from_sources(None, ["train_data=t", "lora=true"])
    with pytest.raises(ValueError, match="overrides: train_data is empty"):
        SFTRunConfig.from_sources(None, [])


def test_a_shipped_recipe_is_found_by_name_outside_the_repository(tmp_path, monkeypatch):
    from cerm.train.recipe import resolve_recipe, shipped_recipe

    monkeypatch.chdir(tmp_path)  # no recipes/ folder here
    shipped = shipped_recipe("sft/tiny-cpu.yaml")
    for name in ("recipes/sft/tiny-cpu.yaml", "sft/tiny-cpu.yaml", "sft/tiny-cpu", "tiny-cpu", "tiny-cpu.yaml"):
        assert resolve_recipe(name) == shipped
    (tmp_path / "tiny-cpu.yaml").write_text("model: mine\n")
    assert resolve_recipe("tiny-cpu.yaml").resolve() == tmp_path / "tiny-cpu.yaml"  # a file as given wins
    with pytest.raises(FileNotFoundError, match=r"nope.yaml: no such file, and no shipped recipe .*sft/tiny-cpu.yaml"):
        resolve_recipe("nope.yaml")
