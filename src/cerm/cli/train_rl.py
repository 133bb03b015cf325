r"""``cerm train rl`` (the two-stage rollout RL trainer) and ``cerm train plot`` (its curves as PNGs).

Multi-GPU runs go through accelerate, which starts one process per device::

    accelerate launch --config_file recipes/accelerate/<strategy>.yaml -m cerm.cli.train_rl rl \
        -c recipes/ce-rm-4b-rl.yaml output_dir=runs/ce-rm-4b-rl
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from cerm.cli.common import console, fail, stdout
from cerm.cli.extras import TRAIN_MODULES, require

app = typer.Typer(
    rich_markup_mode=None,  # plain click help: wraps at 80 columns, never truncates (rich's table cut names)
    help="Train CE-RM: the two-stage rollout RL trainer and its plots.", no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# the headline columns of the per-step console line; everything else goes to metrics.jsonl
_COLUMNS = {"rollout/pairwise_accuracy": "acc", "rollout/tie_rate": "ties", "rollout/parse_failure_rate": "fail",
            "reward/criteria/mean": "r_crit", "loss/kl": "kl", "loss/clip_fraction": "clip",
            "length/judgment/mean": "len_j", "time/step_s": "s"}


def _print_step(step: int, metrics: dict[str, float]) -> None:
    if "eval/pairwise_accuracy" in metrics:
        console.print(f"[bold cyan]eval[/] step {step}: pairwise accuracy {metrics['eval/pairwise_accuracy']:.3f}, "
                      f"ties {metrics['eval/tie_rate']:.3f}, parse failures {metrics['eval/parse_failure_rate']:.3f} "
                      f"({metrics['eval/num_pairs']:.0f} pairs)")
        return
    cells = "  ".join(f"{name} {metrics.get(key, float('nan')):.3g}" for key, name in _COLUMNS.items())
    console.print(f"step {step:>5}  {cells}")


def rl(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML of settings (a recipe: `cerm recipes`; keys: RLConfig fields; unknown keys are errors)")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides of the recipe")] = None,
    resume: Annotated[str | None, typer.Option(help="'auto' (latest checkpoint in output_dir) or a checkpoint "
                                                    "directory")] = None,
) -> None:
    """Two-stage rollout RL: criteria samples, then judgments under each, rewarded per role (docs/training.md §3)."""
    from cerm.train.rl.config import load_rl_config

    try:
        cfg = load_rl_config(config, [*(overrides or []), *([f"resume_from={resume}"] if resume else [])])
    except (OSError, ValueError) as e:
        raise fail(str(e)) from None
    require("cerm train rl", "train", TRAIN_MODULES)
    from cerm.train.rl.trainer import train_rl  # imports torch: only once the config is known to be good

    logging.getLogger("cerm.train").setLevel(logging.INFO)
    try:
        summary = train_rl(cfg, callbacks=[_print_step])
    except (OSError, ValueError) as e:
        raise fail(str(e), code=1) from None
    final = summary["eval"].get(str(summary["step"]), {})
    stdout.print(f"[bold green]done[/]: {summary['step']} steps; model in {Path(cfg.output_dir) / 'final'}; "
                  f"metrics in {Path(cfg.output_dir) / 'metrics.jsonl'}"
                  + (f"; held-out pairwise accuracy {final['eval/pairwise_accuracy']:.3f}" if final else ""))


def plot(
    run: Annotated[Path, typer.Argument(help="an RL output directory (holds metrics.jsonl)")],
    out: Annotated[Path | None, typer.Option(help="where to write the PNGs (default: RUN/plots)")] = None,
) -> None:
    """Render an RL run's curves (accuracy, rewards, advantages, KL/clip, lengths, throughput) as PNGs."""
    require("cerm train plot", "train", ["matplotlib"])
    from cerm.train.rl.plot import plot_run

    try:
        paths = plot_run(run, out)
    except (OSError, ValueError) as e:
        raise fail(str(e)) from None
    for path in paths:
        typer.echo(str(path))


app.command("rl")(rl)
app.command("plot")(plot)

if __name__ == "__main__":  # `accelerate launch -m cerm.cli.train_rl rl -c recipe.yaml`
    app()
