"""Options and helpers shared by every command that needs a judge.

Commands declare ``backend``, ``model`` ... with the ``Annotated`` aliases below and call
``make_judge(BackendOptions(...), JudgeConfig(...))``. Only the CLI reads argv and environment variables.
"""

from __future__ import annotations

import dataclasses
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
from rich.markup import escape

from cerm.backends.base import DEFAULT_MODEL, Backend, get_backend
from cerm.cache import Store
from cerm.io import append_line
from cerm.judge import Judge, JudgeConfig, config_for_model, default_for
from cerm.types import SAMPLE_TEMPERATURE

console = Console(stderr=True)  # logs, progress, warnings and errors
stdout = Console()  # results: tables, chosen answers, where the outputs went (pipe-able)

BackendOpt = Annotated[str, typer.Option(help="hf | vllm | vllm-offline | openai | llamacpp | fake")]
ModelOpt = Annotated[str, typer.Option(help="HF id or local path; 'embedded' = packaged SmolLM2 (plumbing only)")]
BaseUrlOpt = Annotated[
    list[str] | None,
    typer.Option("--base-url", help="OpenAI-compatible server(s); repeat for a load-balanced pool "
                 "(default: $OPENAI_BASE_URL)"),
]
CacheOpt = Annotated[str | None, typer.Option(
    help="SQLite cache file (default: ~/.cache/cerm/cache.sqlite), or redis://HOST:PORT/DB to share criteria, "
         "judgments and leases between replicas on several hosts (pip install 'cerm[redis]')")]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency-limit", help="openai: requests in flight")]
RoutingOpt = Annotated[Literal["affine", "least-loaded"], typer.Option(
    help="openai pool: 'affine' sends a query's criteria turn and its evaluations to one server (rendezvous "
         "hash of the first user message; its prefix cache serves the shared prefix); a request leaves its server "
         "for the least-loaded one only when its server is --concurrency-limit requests in flight ahead (lower "
         "the bound with --backend-arg spill_above=N); 'least-loaded' spreads every request")]
CriteriaTokensOpt = Annotated[int | None, typer.Option(
    help=f"criteria turn budget (default {default_for(DEFAULT_MODEL, 'criteria_max_new_tokens')}; "
         f"embedded: {default_for('embedded', 'criteria_max_new_tokens')})")]
EvalTokensOpt = Annotated[int | None, typer.Option(
    help=f"evaluation turn budget (default {default_for(DEFAULT_MODEL, 'eval_max_new_tokens')}; "
         f"embedded: {default_for('embedded', 'eval_max_new_tokens')})")]
SamplesOpt = Annotated[int, typer.Option(help="k sampled evaluations per response (test-time scaling)")]
SeedOpt = Annotated[int, typer.Option(help="seed for every random choice and sampled decoding")]


SCRIPTED_WARNING = ("--backend fake returns scripted text (scores hashed from the response): "
                    "outputs test the plumbing and are not judgments of any model.")


def default_cache_path() -> Path:
    """The judge cache file: $CERM_CACHE, else ~/.cache/cerm/cache.sqlite."""
    return Path(os.environ.get("CERM_CACHE", Path.home() / ".cache" / "cerm" / "cache.sqlite"))


@dataclass
class BackendOptions:
    """What a command needs to build a backend."""

    backend: str = "hf"
    model: str = DEFAULT_MODEL
    base_url: list[str] | None = None
    api_key: str | None = None
    concurrency_limit: int = 16
    routing: str = "affine"
    extra: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Backend:
        """The backend; an ``openai`` pool is checked before it is returned (a dead URL fails here)."""
        kwargs = dict(self.extra)
        if self.backend == "openai":
            kwargs["base_urls"] = self.base_url or [os.environ.get("OPENAI_BASE_URL", "http://localhost:8000/v1")]
            kwargs["api_key"] = self.api_key or os.environ.get("OPENAI_API_KEY")
            kwargs["concurrency_limit"] = self.concurrency_limit
            kwargs["routing"] = self.routing
        backend = get_backend(self.backend, self.model, **kwargs)
        if self.backend == "openai":
            try:
                backend.check_pool()  # type: ignore[attr-defined]  # a dead URL fails here, not after the run
            except ConnectionError:
                backend.close()
                raise
        return backend


def make_judge(opts: BackendOptions, config: JudgeConfig, cache: str | Path | None = None) -> Judge:
    """Build the judge (backends log the embedded-model warning themselves); the store is opened first, so
    an unreachable Redis fails before a model loads.
    """
    store = Store(cache or default_cache_path())
    return Judge(opts.build(), config, store)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print an error the user can act on and return the Exit to raise."""
    # escaped: "cerm[hf]" is not markup; soft-wrapped: a long path stays whole (the terminal wraps the line)
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def write_jsonl_line(f: Any, record: dict[str, Any]) -> None:
    """Write one record and flush, so an interrupted run keeps every finished item; a full disk is a
    ``WriteError`` naming the file (a torn last line is dropped on resume).
    """
    append_line(f, json.dumps(record, ensure_ascii=False))


@dataclass
class JudgeOptions:
    """Every flag that shapes the judge; ``with_judge_options`` adds them to a command."""

    backend: str = "hf"
    model: str = DEFAULT_MODEL
    base_url: list[str] | None = None
    concurrency_limit: int = 16
    routing: str = "affine"
    cache: str | Path | None = None  # a SQLite path or a redis:// URL
    criteria_max_new_tokens: int | None = None  # None: the model's default (cerm.judge.MODEL_OVERRIDES)
    eval_max_new_tokens: int | None = None
    samples: int = 1
    criteria_samples: int = 1
    sample_temperature: float = SAMPLE_TEMPERATURE
    retries: int = 0
    seed: int = 0
    parser: str = "hardened"
    overlong: str = "error"
    unified_criteria: bool = True
    score: str = "greedy"
    close_unfinished: bool = False
    backend_arg: list[str] | None = None

    def config(self) -> JudgeConfig:
        """The ``JudgeConfig`` these flags ask for, with the model's own budgets where no flag is given."""
        return config_for_model(
            self.model, criteria_max_new_tokens=self.criteria_max_new_tokens,
            eval_max_new_tokens=self.eval_max_new_tokens, samples=self.samples, criteria_samples=self.criteria_samples,
            sample_temperature=self.sample_temperature, retries=self.retries, seed=self.seed,
            parser=self.parser, overlong=self.overlong, unified_criteria=self.unified_criteria,
            expected_score=self.score == "expected", close_unfinished=self.close_unfinished,
        )

    def backend_options(self) -> BackendOptions:
        """What ``BackendOptions.build`` needs from these flags."""
        return BackendOptions(self.backend, self.model, self.base_url, concurrency_limit=self.concurrency_limit,
                              routing=self.routing, extra=parse_backend_args(self.backend_arg or []))

    @property
    def run_name(self) -> str:
        """The model as a default output name; scripted fake runs are labelled so, never as the real model."""
        return f"scripted-fake_{self.model}" if self.backend == "fake" else self.model

    def make_judge(self) -> Judge:
        """The judge, or a ``fail`` the user can act on (unreachable pool, model not found, missing extra)."""
        if self.backend == "fake":
            console.print(f"[yellow]warning:[/] {SCRIPTED_WARNING}")
        try:
            return make_judge(self.backend_options(), self.config(), self.cache)
        except ConnectionError as e:  # an unreachable pool: the message names each URL
            raise fail(str(e)) from None
        except OSError as e:  # hub/offline/missing files: transformers' message may not name the model
            raise fail(f"cannot load model {self.model!r} (backend {self.backend}): {e}") from None
        except (ImportError, ValueError) as e:
            raise fail(str(e)) from None


# name -> typer annotation; each default is JudgeOptions' own (defined once)
_JUDGE_PARAMS: list[tuple[str, Any]] = [
    ("backend", BackendOpt),
    ("model", ModelOpt),
    ("base_url", BaseUrlOpt),
    ("concurrency_limit", ConcurrencyOpt),
    ("routing", RoutingOpt),
    ("cache", CacheOpt),
    ("criteria_max_new_tokens", CriteriaTokensOpt),
    ("eval_max_new_tokens", EvalTokensOpt),
    ("samples", SamplesOpt),
    ("criteria_samples", Annotated[int, typer.Option(help="k_c sampled criteria sets per query")]),
    ("sample_temperature", Annotated[float, typer.Option(help="temperature for sampled evaluations")]),
    ("retries", Annotated[int, typer.Option(help="re-sample a failed evaluation up to N times (off by default)")]),
    ("seed", SeedOpt),
    ("parser", Annotated[Literal["hardened", "reference"], typer.Option(help="score parser")]),
    ("overlong", Annotated[Literal["error", "truncate"],
                           typer.Option(help="prompt over the context: explicit error, or cut the response")]),
    ("unified_criteria", Annotated[bool, typer.Option(help="share criteria across responses "
                                                      "(--no-unified-criteria = the paper's ablation)")]),
    ("backend_arg", Annotated[list[str] | None, typer.Option(
        help="KEY=VALUE for the backend's constructor (vllm: enforce_eager=true); VALUE read as JSON "
             "when it parses; repeat")]),
    ("score", Annotated[Literal["greedy", "expected"], typer.Option(
        help="greedy boxed score (the paper's) or the expected score at the box [R]")]),
    ("close_unfinished", Annotated[bool, typer.Option(
        help="[R] close a truncated / box-less evaluation and read its score (status 'completed')")]),
]


def parse_backend_args(items: list[str]) -> dict[str, Any]:
    """``["enforce_eager=true", "dtype=bfloat16"]`` -> ``{"enforce_eager": True, "dtype": "bfloat16"}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise fail(f"--backend-arg {item!r}: expected KEY=VALUE with KEY a Python identifier.")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def with_judge_options(func: Callable[..., Any] | None = None, *, handle_signals: bool = True) -> Any:
    """Add the judge flags to a typer command; the command receives them as ``judge_opts: JudgeOptions``.

    The command runs under ``cerm.cli.stopping.stops_cleanly``: SIGTERM/SIGINT and a full disk end it with a
    one-line "resume with the same command" (``handle_signals=False`` for a command with its own, `serve`).
    """
    if func is None:
        return functools.partial(with_judge_options, handle_signals=handle_signals)
    from cerm.cli.stopping import stops_cleanly

    hints = typing.get_type_hints(func, include_extras=True)
    sig = inspect.signature(func)
    own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()
           if p.name != "judge_opts"]
    names = [name for name, _ in _JUDGE_PARAMS]
    defaults = {f.name: f.default for f in dataclasses.fields(JudgeOptions)}
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name], annotation=annotation)
             for name, annotation in _JUDGE_PARAMS]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        opts = JudgeOptions(**{name: kwargs.pop(name) for name in names if name in kwargs})
        with stops_cleanly(handle_signals):
            return func(*args, judge_opts=opts, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + extra)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in own + extra}
    return wrapper
