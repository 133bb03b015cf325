"""`cerm train sft` and `cerm train rl` under ``accelerate launch --num_processes 2`` on CPU (gloo), for real.

Each test launches the real CLI as 1 and as 2 processes at the same global batch (side by side, the machine
has 2 cores) and checks: the 2-process run is one gloo group (world_size 2 in run.json), only rank 0 writes
(one metrics line per step), the per-step losses and the final weights equal the 1-process run's within
float tolerance, and ``--resume auto`` after a kill (simulated: the last checkpoint, the final model and the
metrics after the kept checkpoint removed) ends on the same weights.

RL is made comparable with ``seeded_rollouts`` (each prompt copy samples from its own seed), so both runs
draw the same rollouts; the mini-batches of a step hold the same pairs at any world size (data.take_shard).
Measured on a busy 2-core VM: 1 vs 2 processes, max |weight difference| 0.0 (SFT, 3 steps) and 7.4e-7 (RL,
2 steps at lr 1e-3); losses equal to ~1e-8 relative.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")
pytest.importorskip("trl")

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WEIGHT_ATOL = 1e-5  # fp32 on CPU: all-reduce vs local accumulation reorders sums; measured 7.4e-7 (RL)
LOSS_RTOL = 1e-5

pytestmark = [pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(module: str, args: list[str], processes: int, log: Path, config_file: Path | None = None
           ) -> subprocess.Popen:
    """``accelerate launch`` of a cerm CLI module: 2 processes through torchrun (gloo), 1 as a plain process.

    ``config_file``: an accelerate recipe (its distributed type) instead of plain ``--multi_gpu``.
    """
    if processes == 1:
        cmd = [sys.executable, "-m", module, *args]
    else:
        kind = ["--config_file", str(config_file)] if config_file else ["--multi_gpu"]
        cmd = [str(BIN / "accelerate"), "launch", *kind, "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", module, *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def finish(*procs_and_logs: tuple[subprocess.Popen, Path]) -> None:
    for proc, log in procs_and_logs:
        assert proc.wait(timeout=900) == 0, f"{proc.args} failed:\n{log.read_text()[-4000:]}"


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def max_diff(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def assert_close(xs: list[float], ys: list[float]) -> None:
    assert len(xs) == len(ys) and xs, (xs, ys)
    for x, y in zip(xs, ys, strict=True):
        assert y == pytest.approx(x, rel=LOSS_RTOL, abs=1e-7), (xs, ys)


@pytest.fixture(scope="module")
def sft_rows(tmp_path_factory) -> Path:
    from sft.test_trainer import _rows  # pytest puts tests/train on sys.path (sft is a package)

    return _rows(tmp_path_factory.mktemp("mp-sft"), n=8)


def test_sft_two_processes_equal_one_and_resume_exactly(tiny_model_dir, sft_rows, tmp_path):
    common = ["-c", str(ROOT / "recipes" / "sft" / "tiny-cpu.yaml"), f"model={tiny_model_dir}",
              f"train_data={sft_rows}", "max_steps=3", "batch_size=2", "per_device_batch_size=1",
              "save_strategy=steps", "save_steps=1", "use_cpu=true"]
    one, two = tmp_path / "one", tmp_path / "two"
    finish((launch("cerm.cli.train_sft", [*common, f"output_dir={one}"], 1, tmp_path / "one.log"), tmp_path / "one.log"),
           (launch("cerm.cli.train_sft", [*common, f"output_dir={two}"], 2, tmp_path / "two.log"), tmp_path / "two.log"))
    run1, run2 = (json.loads((d / "run.json").read_text()) for d in (one, two))
    assert (run1["world_size"], run2["world_size"]) == (1, 2)
    loss = [[h["loss"] for h in r["log_history"] if "loss" in h] for r in (run1, run2)]
    assert len(loss[0]) == 3
    assert_close(*loss)
    assert max_diff(one / "final", two / "final") <= WEIGHT_ATOL

    # killed after step 2: the newest checkpoint and the final model are gone; --resume auto finishes step 3
    final = weights(two / "final")
    shutil.rmtree(two / "checkpoint-3")
    shutil.rmtree(two / "final")
    log = tmp_path / "resume.log"
    finish((launch("cerm.cli.train_sft", [*common, f"output_dir={two}", "--resume", "auto"], 2, log), log))
    resumed = weights(two / "final")
    assert max((final[k] - resumed[k]).abs().max().item() for k in final) <= WEIGHT_ATOL
    history = json.loads((two / "run.json").read_text())["log_history"]  # steps 1-2 come from the checkpoint
    assert_close([h["loss"] for h in history if "loss" in h], loss[1])


def test_sft_fsdp_recipe_on_cpu_says_it_is_not_sharded(tiny_model_dir, sft_rows, tmp_path):
    """The shipped FSDP recipe on CPU: what accelerate really runs is recorded and warned about, not hidden."""
    common = ["-c", str(ROOT / "recipes" / "sft" / "tiny-cpu.yaml"), f"model={tiny_model_dir}",
              f"train_data={sft_rows}", "max_steps=2", "batch_size=2", "per_device_batch_size=1", "use_cpu=true"]
    one, two = tmp_path / "one", tmp_path / "fsdp"
    finish((launch("cerm.cli.train_sft", [*common, f"output_dir={one}"], 1, tmp_path / "one.log"), tmp_path / "one.log"),
           (launch("cerm.cli.train_sft", [*common, f"output_dir={two}"], 2, tmp_path / "fsdp.log",
                   config_file=ROOT / "recipes" / "accelerate" / "fsdp.yaml"), tmp_path / "fsdp.log"))
    run1, run2 = (json.loads((d / "run.json").read_text()) for d in (one, two))
    assert run1["parallelism"] == {"requested_type": None, "distributed_type": "NO", "processes": 1,
                                   "fsdp_sharded_modules": 0}
    # accelerate 1.15 enables FSDP only on accelerator devices: on CPU the recipe runs as DDP over gloo, and
    # the run says so (a warning and its record) instead of passing for sharded training
    assert run2["parallelism"] == {"requested_type": "FSDP", "distributed_type": "MULTI_CPU", "processes": 2,
                                   "fsdp_sharded_modules": 0}
    assert "the launch asked for FSDP but accelerate runs MULTI_CPU" in (tmp_path / "fsdp.log").read_text()
    assert_close(*([h["loss"] for h in r["log_history"] if "loss" in h] for r in (run1, run2)))
    assert max_diff(one / "final", two / "final") <= WEIGHT_ATOL


@pytest.fixture(scope="module")
def rl_recipe(tiny_model_dir, tmp_path_factory) -> Path:
    from filelock import FileLock
    from rl.rl_task import TASK_VERSION, build_task

    root = tiny_model_dir.parent / f"rl-{TASK_VERSION}"
    with FileLock(str(root) + ".lock"):
        train, _, sft = build_task(tiny_model_dir, root)
    recipe = tmp_path_factory.mktemp("mp-rl") / "rl.yaml"
    # 4 pairs per step in 2 updates of 2 micro-batches each (micro_batch_size 4 < 10 trajectories per update)
    recipe.write_text(f"model: {sft}\ntrain_data: {train}\nseed: 1\nnum_criteria: 2\nnum_judgments: 2\n"
                      "criteria_max_new_tokens: 24\neval_max_new_tokens: 32\npairs_per_step: 4\nnum_mini_batches: 2\n"
                      "micro_batch_size: 4\nlearning_rate: 1.0e-3\nkl_coef: 1.0e-3\nmax_steps: 2\nsave_every: 1\n"
                      "save_total_limit: 3\nseeded_rollouts: true\nuse_cpu: true\n")
    return recipe


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


RL_KEYS = ("loss/policy", "loss/kl", "grad_norm/mean", "reward/criteria/mean", "advantage/chosen/std",
           "rollout/pairwise_accuracy", "length/judgment/mean")


def test_rl_two_processes_equal_one_and_resume_exactly(rl_recipe, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["rl", "-c", str(rl_recipe)]
    finish((launch("cerm.cli.train_rl", [*args, f"output_dir={one}"], 1, tmp_path / "one.log"), tmp_path / "one.log"),
           (launch("cerm.cli.train_rl", [*args, f"output_dir={two}"], 2, tmp_path / "two.log"), tmp_path / "two.log"))
    assert json.loads((two / "run.json").read_text())["world_size"] == 2
    m1, m2 = metrics(one), metrics(two)
    assert [m["step"] for m in m2] == [1, 2]  # rank 0 alone writes, one line per step
    # equal to the 1-process run's metrics, so they cover all 4 pairs of a step, not rank 0's 2
    for key in RL_KEYS:
        assert_close([m[key] for m in m1], [m[key] for m in m2])
    assert max_diff(one / "final", two / "final") <= WEIGHT_ATOL

    # killed after step 1: --resume auto under 2 processes replays step 2 exactly
    final = weights(two / "final")
    shutil.rmtree(two / "checkpoints" / "step-000002")
    shutil.rmtree(two / "final")
    (two / "metrics.jsonl").write_text(json.dumps(m2[0]) + "\n")
    log = tmp_path / "resume.log"
    finish((launch("cerm.cli.train_rl", [*args, f"output_dir={two}", "--resume", "auto"], 2, log), log))
    resumed = weights(two / "final")
    assert max((final[k] - resumed[k]).abs().max().item() for k in final) <= WEIGHT_ATOL
    again = metrics(two)
    assert [m["step"] for m in again] == [1, 2]
    for key in RL_KEYS:
        assert_close([m2[1][key]], [again[1][key]])


def test_a_cpu_launch_without_use_cpu_is_refused(rl_recipe, tiny_model_dir, sft_rows, tmp_path):
    """Without use_cpu, accelerate on a GPU-less host would run 2 independent copies that both write."""
    if torch.cuda.is_available():
        pytest.skip("a GPU host runs the processes on its GPUs")
    sft = ["-c", str(ROOT / "recipes" / "sft" / "tiny-cpu.yaml"), f"model={tiny_model_dir}", f"train_data={sft_rows}",
           "max_steps=1", f"output_dir={tmp_path / 'sft'}", "use_cpu=false"]
    rl = ["rl", "-c", str(rl_recipe), f"output_dir={tmp_path / 'rl'}", "use_cpu=false"]
    procs = [(launch(f"cerm.cli.{module}", args, 2, tmp_path / f"{module}.log"), tmp_path / f"{module}.log")
             for module, args in (("train_sft", sft), ("train_rl", rl))]
    for proc, log in procs:
        assert proc.wait(timeout=600) != 0, log.read_text()[-2000:]
        assert "set use_cpu=true" in log.read_text()
    assert not (tmp_path / "sft" / "final").exists()
