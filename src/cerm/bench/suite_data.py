"""The suite's data step: load every benchmark before any model call, and name missing data with its fix.

A benchmark whose data cannot be read (no local copy and the hub unreachable, ``datasets`` not installed,
a path that does not exist) becomes a ``MissingData`` with the exact commands that fix it; a file that is
there but malformed stays an error (``cerm.io.DataError``, raised), since no download fixes it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cerm.bench.common import (
    BenchItem,
    Benchmark,
    HFSource,
    load_items,
    resolve_sources,
    select_items,
    subset_prefixes,
)

# where the benchmarks with a GitHub copy come from (the commits of ../shared/data/*/README.md)
GIT_SOURCES: dict[str, tuple[str, str, str]] = {  # name -> (repository, commit, files to copy)
    "judgebench": ("https://github.com/ScalerLab/JudgeBench", "e2c52c284e735e139b3daa61c206ee208f36c461",
                   "data/*.jsonl"),
    "rm-bench": ("https://github.com/THU-KEG/RM-Bench", "73c52d7b27b361621361ec959ac6c0eb9bb7a689",
                 "data/*_filtered.json"),
    "rmb": ("https://github.com/Zhou-Zoey/RMB-Reward-Model-Benchmark", "2be3180857f2190b7ffa929d43190835627f1f4d",
            "RMB_dataset/*"),
}


@dataclass(frozen=True)
class MissingData:
    """A benchmark the suite cannot load, why, and the commands that fix it."""

    benchmark: str
    title: str
    problem: str
    fix: tuple[str, ...]


@dataclass(frozen=True)
class Loaded:
    """A benchmark's selected items, how many its data holds, the sources read and what they lack."""

    bench: Benchmark
    items: list[BenchItem]
    n_available: int
    sources: list[str]
    data_root: Path
    lacking: tuple[str, ...] = field(default=())  # official subsets with no item in the data


def export_command(source: HFSource, folder: str) -> str:
    """The one-liner that writes an HF split as parquet in the official schema, named as the loaders expect."""
    name = source.hf_id.split("/")[-1]
    return (f"python -c \"import datasets; datasets.load_dataset('{source.hf_id}', split='{source.split}')"
            f".to_parquet('{folder}/{name}.parquet')\"")


def fix_for(bench: Benchmark, data_root: Path) -> tuple[str, ...]:
    """Commands that fetch the benchmark into ``data/<folder>`` (the current directory) and the flag that reads
    it; the default data root (often read-only) is named as the other place the suite looks.
    """
    folder = f"data/{bench.local_dir or bench.name}"
    if bench.name in GIT_SOURCES:
        repo, commit, files = GIT_SOURCES[bench.name]
        clone = f"data/src/{repo.rsplit('/', 1)[-1]}"
        lines = [f"git clone {repo} {clone} && git -C {clone} checkout {commit}",
                 f"mkdir -p {folder} && cp -r {clone}/{files} {folder}/"]
    else:
        lines = ["pip install datasets   # on a machine that reaches the HF hub", f"mkdir -p {folder}",
                 *(export_command(s, folder) for s in bench.hf)]
    where = f"{data_root / (bench.local_dir or bench.name)}"
    hub = "" if bench.name in GIT_SOURCES else "; or run where the HF hub is reachable" + (
        " (unset HF_HUB_OFFLINE)" if os.environ.get("HF_HUB_OFFLINE") else "")
    return (*lines, f"# then rerun with --data {bench.name}={folder} (or put the files in {where}, where the "
                    f"suite looks by default{hub})")


def load_benchmark(bench: Benchmark, data: Sequence[str] | None, data_root: Path, limit: int | None,
                   seed: int) -> Loaded | MissingData:
    """Every item of the benchmark (to count what is available), then the seeded ``limit`` selection."""
    try:
        sources = resolve_sources(bench, data, data_root)
        items = load_items(bench, sources)
    except FileNotFoundError as e:
        return MissingData(bench.name, bench.title, str(e), fix_for(bench, data_root))
    except ImportError as e:
        return MissingData(bench.name, bench.title, f"loading from the HF hub needs `datasets` ({e})",
                           fix_for(bench, data_root))
    except (ConnectionError, OSError) as e:  # datasets: hub unreachable, offline mode, no cached copy
        where = data_root / (bench.local_dir or bench.name)
        return MissingData(bench.name, bench.title, f"no local copy at {where} and the HF hub is not reachable "
                           f"({type(e).__name__}: {e})", fix_for(bench, data_root))
    present = {p for it in items for p in subset_prefixes(it.subset)}
    lacking = tuple(s for s in bench.subsets if s not in present)
    labels = [f"hf:{s.hf_id}[{s.split}]" if isinstance(s, HFSource) else str(s) for s in sources]
    return Loaded(bench, select_items(items, (), limit, seed), len(items), labels, data_root, lacking)

