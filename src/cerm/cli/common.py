"""Options and helpers shared by every command that needs a judge.

Commands declare ``backend``, ``model`` ... with the ``Annotated`` aliases below and call
``make_judge(BackendOptions(...), JudgeConfig(...))``. Only the CLI reads argv and environment variables.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

from cerm.backends.base import DEFAULT_MODEL, Backend, get_backend
from cerm.cache import Store
from cerm.judge import Judge, JudgeConfig

console = Console(stderr=True)

BackendOpt = Annotated[str, typer.Option(help="hf | vllm | openai | llamacpp | fake")]
ModelOpt = Annotated[str, typer.Option(help="HF id or local path; 'embedded' = packaged SmolLM2 (plumbing only)")]
BaseUrlOpt = Annotated[
    list[str] | None,
    typer.Option("--base-url", help="OpenAI-compatible server(s); repeat for a load-balanced pool "
                 "(default: $OPENAI_BASE_URL)"),
]
CacheOpt = Annotated[Path | None, typer.Option(help="SQLite cache file (default: ~/.cache/cerm/cache.sqlite)")]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency-limit", help="openai: requests in flight")]
CriteriaTokensOpt = Annotated[int, typer.Option(help="max new tokens for the criteria turn")]
EvalTokensOpt = Annotated[int, typer.Option(help="max new tokens for the evaluation turn")]
SamplesOpt = Annotated[int, typer.Option(help="k sampled evaluations per response (test-time scaling)")]
SeedOpt = Annotated[int, typer.Option(help="seed for every random choice and sampled decoding")]


def default_cache_path() -> Path:
    return Path(os.environ.get("CERM_CACHE", Path.home() / ".cache" / "cerm" / "cache.sqlite"))


@dataclass
class BackendOptions:
    """What a command needs to build a backend."""

    backend: str = "hf"
    model: str = DEFAULT_MODEL
    base_url: list[str] | None = None
    api_key: str | None = None
    concurrency_limit: int = 16
    extra: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Backend:
        kwargs = dict(self.extra)
        if self.backend == "openai":
            kwargs["base_urls"] = self.base_url or [os.environ.get("OPENAI_BASE_URL", "http://localhost:8000/v1")]
            kwargs["api_key"] = self.api_key or os.environ.get("OPENAI_API_KEY")
            kwargs["concurrency_limit"] = self.concurrency_limit
        return get_backend(self.backend, self.model, **kwargs)


def make_judge(opts: BackendOptions, config: JudgeConfig, cache: Path | None = None) -> Judge:
    """Build the judge (backends log the embedded-model warning themselves)."""
    return Judge(opts.build(), config, Store(cache or default_cache_path()))


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print an error the user can act on and return the Exit to raise."""
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def write_jsonl_line(f: Any, record: dict[str, Any]) -> None:
    """Write one record and flush, so an interrupted run keeps every finished item."""
    f.write(json.dumps(record, ensure_ascii=False) + "\n")
    f.flush()


@dataclass
class JudgeOptions:
    """Every flag that shapes the judge; ``with_judge_options`` adds them to a command."""

    backend: str = "hf"
    model: str = DEFAULT_MODEL
    base_url: list[str] | None = None
    concurrency_limit: int = 16
    cache: Path | None = None
    criteria_max_new_tokens: int = 4096
    eval_max_new_tokens: int = 8192
    samples: int = 1
    criteria_samples: int = 1
    sample_temperature: float = 0.7
    retries: int = 0
    seed: int = 0
    parser: str = "hardened"
    overlong: str = "error"
    unified_criteria: bool = True
    score: str = "greedy"
    close_unfinished: bool = False

    def config(self) -> JudgeConfig:
        return JudgeConfig(
            criteria_max_new_tokens=self.criteria_max_new_tokens, eval_max_new_tokens=self.eval_max_new_tokens,
            samples=self.samples, criteria_samples=self.criteria_samples,
            sample_temperature=self.sample_temperature, retries=self.retries, seed=self.seed,
            parser=self.parser, overlong=self.overlong, unified_criteria=self.unified_criteria,  # type: ignore[arg-type]
            expected_score=self.score == "expected", close_unfinished=self.close_unfinished,
        )

    def backend_options(self) -> BackendOptions:
        return BackendOptions(self.backend, self.model, self.base_url, concurrency_limit=self.concurrency_limit)

    def make_judge(self) -> Judge:
        try:
            return make_judge(self.backend_options(), self.config(), self.cache)
        except (ImportError, ValueError, OSError) as e:
            raise fail(str(e)) from None


_JUDGE_PARAMS: list[tuple[str, Any, Any]] = [
    ("backend", BackendOpt, "hf"),
    ("model", ModelOpt, DEFAULT_MODEL),
    ("base_url", BaseUrlOpt, None),
    ("concurrency_limit", ConcurrencyOpt, 16),
    ("cache", CacheOpt, None),
    ("criteria_max_new_tokens", CriteriaTokensOpt, 4096),
    ("eval_max_new_tokens", EvalTokensOpt, 8192),
    ("samples", SamplesOpt, 1),
    ("criteria_samples", Annotated[int, typer.Option(help="k_c sampled criteria sets per query")], 1),
    ("sample_temperature", Annotated[float, typer.Option(help="temperature for sampled evaluations")], 0.7),
    ("retries", Annotated[int, typer.Option(help="re-sample a failed evaluation up to N times (off by default)")], 0),
    ("seed", SeedOpt, 0),
    ("parser", Annotated[Literal["hardened", "reference"], typer.Option(help="score parser")], "hardened"),
    ("overlong", Annotated[Literal["error", "truncate"],
                           typer.Option(help="prompt over the context: explicit error, or cut the response")], "error"),
    ("unified_criteria", Annotated[bool, typer.Option(help="share criteria across responses "
                                                      "(--no-unified-criteria = the paper's ablation)")], True),
    ("score", Annotated[Literal["greedy", "expected"], typer.Option(
        help="rank by the greedy boxed score (the paper's) or the expected score over the 21 values at the box "
             "[R] (needs hf, vllm, llamacpp or vLLM's server)")], "greedy"),
    ("close_unfinished", Annotated[bool, typer.Option(
        help="[R] append a closing text to a truncated / box-less evaluation and read the score there "
             "(status 'completed', never 'ok')")], False),
]


def with_judge_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the judge flags to a typer command; the command receives them as ``judge_opts: JudgeOptions``."""
    hints = typing.get_type_hints(func, include_extras=True)
    sig = inspect.signature(func)
    own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()
           if p.name != "judge_opts"]
    names = [name for name, _, _ in _JUDGE_PARAMS]
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
             for name, annotation, default in _JUDGE_PARAMS]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        opts = JudgeOptions(**{name: kwargs.pop(name) for name in names if name in kwargs})
        return func(*args, judge_opts=opts, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + extra)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in own + extra}
    return wrapper
