r"""``cerm train sft``: the SFT cold start on `cerm distill` traces (TRL SFTTrainer, full or LoRA).

Multi-GPU runs go through accelerate, which starts one process per device::

    accelerate launch --config_file recipes/accelerate/deepspeed-zero3.yaml -m cerm.cli.train_sft \
        -c recipes/ce-rm-4b-sft.yaml train_data=data/sft/traces.jsonl
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from cerm.cli.common import fail, stdout
from cerm.cli.extras import TRAIN_MODULES, require


def sft(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML of settings (a recipe: `cerm recipes`; keys: SFT config fields; unknown keys are errors)")
                      ] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides of the recipe")] = None,
    resume: Annotated[str | None, typer.Option(help="'auto' (latest checkpoint in output_dir) or a checkpoint "
                                                    "directory")] = None,
) -> None:
    """SFT cold start: loss on both assistant turns (criteria once per pair, every evaluation)."""
    from cerm.train.sft.config import SFTRunConfig

    try:
        cfg = SFTRunConfig.from_sources(config, overrides)
        cfg.gradient_accumulation_steps(SFTRunConfig.world_size())
    except (OSError, ValueError) as e:
        raise fail(str(e)) from None
    require("cerm train sft", "train", [*TRAIN_MODULES, "datasets"])
    if cfg.model == "embedded":  # the packaged SmolLM2 as an HF directory (converted once; plumbing only)
        from dataclasses import replace

        from cerm.backends import embedded

        try:
            cfg = replace(cfg, model=str(embedded.embedded_hf_dir()))
        except ImportError as e:
            raise fail(str(e)) from None
    from cerm.train.sft.trainer import (  # imports torch: only once the config is known to be good
        final_dir,
        train_sft,
    )

    logging.getLogger("cerm.train").setLevel(logging.INFO)
    try:
        result = train_sft(cfg, resume_from=resume)
    except (OSError, ValueError) as e:
        raise fail(str(e), code=1) from None
    first, last = (result.losses[0], result.losses[-1]) if result.losses else (float("nan"), float("nan"))
    stdout.print(f"[bold green]done[/]: {result.steps} steps on {result.rows} rows "
                  f"({len(result.dropped_overlong)} over max_length dropped); loss {first:.4f} -> {last:.4f}; "
                  f"model in {final_dir(cfg)}; log in {Path(cfg.output_dir) / 'run.json'}")


app = typer.Typer(
    rich_markup_mode=None,  # plain click help: wraps at 80 columns, never truncates (rich's table cut names)
    help="SFT cold start of a CE-RM judge.", no_args_is_help=True, pretty_exceptions_enable=False)
app.command("sft")(sft)

if __name__ == "__main__":  # `accelerate launch -m cerm.cli.train_sft -c recipe.yaml key=value ...`
    app()
