"""The `cerm` command line. The only place that reads argv, environment variables and config files.

May import: every other package (it wires them together); nothing imports ``cerm.cli``.
"""

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
from cerm.cli.common import fail
from cerm.cli.curate import curate, distill
from cerm.cli.demo import demo
from cerm.cli.info import backends, recipes, version
from cerm.cli.judging import bon, score
from cerm.cli.serve import serve
from cerm.cli.view import view

app = typer.Typer(
    rich_markup_mode=None,  # plain click help: wraps at 80 columns, never truncates (rich's table cut names)
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
app.command(help="List the backends, what each needs and whether it imports here.")(backends)
app.command(help="List the shipped training recipes or print one.")(recipes)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"cerm {version()}")
        raise typer.Exit()
app.command(help="Read a run's criteria and judgments in a browser (static site; --serve to serve it).")(view)


def _defaults_for(command: Any, flat: dict[str, Any]) -> dict[str, Any]:
    """Click default_map for every subcommand: a flat YAML applies to whichever command runs."""
    if isinstance(command, typer.core.TyperGroup):
        return {name: _defaults_for(sub, flat) for name, sub in command.commands.items()}
    names = {p.name for p in command.params}
    return {k: v for k, v in flat.items() if k in names}


def _flag_names(command: Any) -> set[str]:
    if isinstance(command, typer.core.TyperGroup):
        return set().union(*(_flag_names(sub) for sub in command.commands.values()))
    return {p.name for p in command.params if p.name}


def _check_keys(config: Path, flat: dict[str, Any], command: Any, name: str | None) -> None:
    """Unknown keys and nested sections are errors, never silently dropped."""
    target = command.commands.get(name) if name else None
    known = _flag_names(target if target is not None else command) - {"config"}
    for key, value in flat.items():
        if isinstance(value, dict):
            raise fail(f"--config {config}: key {key!r} holds a nested section; the file is flat "
                       "(flag names to values)")
        if key not in known:
            hint = " (training recipes go after the command: cerm train sft -c RECIPE)" if name == "train" else ""
            raise fail(f"--config {config}: unknown key {key!r} for `cerm {name}`{hint}")


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML of settings for the command (keys: its flag names; unknown keys are errors; flags override)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    show_version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="print the version and exit")] = False,
) -> None:
    """Read --config and set up logging for the subcommand that runs."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if config is not None:
        try:
            flat = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise fail(f"--config {config}: cannot read it: {e}") from None
        if not isinstance(flat, dict):
            raise fail(f"--config {config}: must hold a mapping of flag names to values")
        flat = {str(k).replace("-", "_"): v for k, v in flat.items()}
        _check_keys(config, flat, ctx.command, ctx.invoked_subcommand)
        ctx.default_map = _defaults_for(ctx.command, flat)


def main() -> None:
    """The ``cerm`` entry point."""
    app()
