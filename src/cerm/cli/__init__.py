"""The `cerm` command line. The only place that reads argv, environment variables and config files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
import yaml

from cerm.cli import bench as bench_cmds
from cerm.cli import criteria as criteria_cmds
from cerm.cli import train_rl, train_sft
from cerm.cli.curate import curate, distill
from cerm.cli.demo import demo
from cerm.cli.judging import bon, score
from cerm.cli.serve import serve
from cerm.cli.view import view

app = typer.Typer(
    name="cerm",
    help="CE-RM: criteria-first pointwise generative reward model. Judge, benchmark, serve and train.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command(help="Score responses (criteria once per query, one evaluation per response).")(score)
app.command(help="Best-of-N selection over JSONL of {query, responses}.")(bon)
app.command(help="Best-of-N on Arena-Hard prompts with the embedded model (plumbing demo).")(demo)
app.add_typer(criteria_cmds.app, name="criteria")
app.add_typer(bench_cmds.app, name="bench")
app.command("probe", help="Bias probes: length, format, self-praise, score inflation.")(bench_cmds.probe)
app.command(help="Reward server: OpenRLHF /get_reward, /v1/score, /v1/compare, /health, /metrics.")(serve)
app.command(help="Curate preference pairs: validate, filter, dedupe, pass-rate filter, balance, split, report.")(curate)
app.command(help="SFT traces from a teacher judge, kept when they order the pair as labelled.")(distill)
train_rl.app.command("sft", help="SFT cold start with TRL SFTTrainer (loss on both assistant turns).")(train_sft.sft)
app.add_typer(train_rl.app, name="train")
app.command(help="Read a run's criteria and judgments in a browser (static site; --serve to serve it).")(view)


def _defaults_for(command: Any, flat: dict[str, Any]) -> dict[str, Any]:
    """click default_map for every subcommand: a flat YAML applies to whichever command runs."""
    if isinstance(command, typer.core.TyperGroup):
        return {name: _defaults_for(sub, flat) for name, sub in command.commands.items()}
    names = {p.name for p in command.params}
    return {k: v for k, v in flat.items() if k in names}


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML of flag defaults (flags override)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if config is not None:
        try:
            flat = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise typer.BadParameter(f"cannot read {config}: {e}", param_hint="--config") from None
        if not isinstance(flat, dict):
            raise typer.BadParameter(f"{config} must hold a mapping of flag names to values", param_hint="--config")
        flat = {k.replace("-", "_"): v for k, v in flat.items()}
        ctx.default_map = _defaults_for(ctx.command, flat)


def main() -> None:
    app()
