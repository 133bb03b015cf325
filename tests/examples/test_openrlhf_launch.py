"""examples/openrlhf/run_grpo_cerm.sh against OpenRLHF's own argument parsing and validation.

OpenRLHF builds its parser and checks the flags inside ``train_ppo_ray``'s ``if __name__ == "__main__":``
block; the module's imports need Ray, DeepSpeed and GPUs. We run that block, unmodified, from the
installed package's source with ``train`` replaced by a capture, so every flag of our launch line goes
through the real parser (unknown flags are errors) and the real asserts. Then the GPU layout is checked:
what Ray is asked for fits the GPUs it sees, and the judges' GPUs are not among them.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import re
import shlex
import sys
from datetime import datetime
from pathlib import Path

import pytest
from support import ROOT

SCRIPT = ROOT / "examples" / "openrlhf" / "run_grpo_cerm.sh"
GPUS_PER_NODE = 8  # the layout the script's comment states


def launch_args(text: str) -> tuple[list[str], dict[str, str]]:
    """The `python -m openrlhf.cli.train_ppo_ray ...` arguments (variables expanded) and its env prefix."""
    joined = text.replace("\\\n", " ")
    line = next(x for x in joined.splitlines() if "openrlhf.cli.train_ppo_ray" in x)
    env = {"POLICY": "Qwen/Qwen3-8B", "PROMPTS": "data/tulu3_prompts.jsonl", "HOST": "127.0.0.1"}
    line = re.sub(r'"?\$\{?(\w+)\}?"?', lambda m: env.get(m.group(1), ""), line.replace('"$@"', ""))
    words = shlex.split(line)
    at = words.index("-m")
    prefix = dict(w.split("=", 1) for w in words[:at] if "=" in w)
    return words[at + 2:], prefix


def run_openrlhf_main(argv: list[str]):
    spec = importlib.util.find_spec("openrlhf.cli.train_ppo_ray")
    if spec is None or spec.origin is None:
        pytest.skip("openrlhf is not installed (pip install openrlhf==0.11.2 --no-deps)")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    main = next(n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test))
    captured = {}
    scope = {"argparse": argparse, "os": os, "datetime": datetime, "train": lambda a: captured.setdefault("args", a)}
    module = ast.Module(body=main.body, type_ignores=[])
    saved = sys.argv
    sys.argv = ["train_ppo_ray", *argv]
    try:
        exec(compile(module, spec.origin, "exec"), scope)
    finally:
        sys.argv = saved
    return captured["args"]


@pytest.mark.slow  # importing the openrlhf package pulls in torch and transformers
def test_launch_line_passes_openrlhf_parsing_and_fits_the_gpus():
    text = SCRIPT.read_text()
    argv, env = launch_args(text)
    args = run_openrlhf_main(argv)  # SystemExit(2) here = a flag OpenRLHF does not know
    assert args.reward.remote_url == ["http://127.0.0.1:8000/get_reward", "http://127.0.0.1:8001/get_reward"]
    visible = env.get("CUDA_VISIBLE_DEVICES")
    assert visible, "the trainer must be fenced off the judges' GPUs with CUDA_VISIBLE_DEVICES"
    trainer_gpus = {int(g) for g in visible.split(",")}
    judge_gpus = {int(g) for g in re.findall(r"CUDA_VISIBLE_DEVICES=\$\(\((\d+) \+ i\)\)", text)}
    judge_gpus = {g + i for g in judge_gpus for i in (0, 1)}
    assert judge_gpus and not trainer_gpus & judge_gpus and max(trainer_gpus | judge_gpus) < GPUS_PER_NODE
    actor = args.actor.num_nodes * args.actor.num_gpus_per_node
    ref = args.ref.num_nodes * args.ref.num_gpus_per_node
    vllm = args.vllm.num_engines * args.vllm.tensor_parallel_size
    colocated = args.train.colocate_actor_ref or args.train.colocate_all
    # the KL loss needs the reference model; colocated it shares the actor's GPUs (OpenRLHF asserts equal sizes)
    asked = (actor if colocated else actor + ref) + (0 if args.train.colocate_all else vllm)
    assert asked <= len(trainer_gpus), f"Ray is asked for {asked} GPUs but sees {len(trainer_gpus)}"
    assert not colocated or args.algo.kl.init_coef == 0 or ref == actor
