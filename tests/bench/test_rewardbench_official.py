"""RewardBench 1 and 2 metrics against reward-bench's own code (PyPI ``rewardbench==0.1.4``,
scripts/counterparts.txt).

The package's ``__init__`` and ``utils`` import fastchat, the hub client and its model registry; the scoring
code does not use them. So ``constants.py`` is loaded as a file, and the scoring functions are compiled from
their own definitions in ``utils.py`` (the installed source, unchanged), without that module's imports.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import random
from pathlib import Path

import pytest

from cerm.bench import rewardbench
from cerm.bench.common import Outcome
from cerm.bench.metrics import section_scores

PACKAGE = Path(importlib.util.find_spec("rewardbench").submodule_search_locations[0])


def load_file(name: str):
    spec = importlib.util.spec_from_file_location(f"official_rewardbench_{name}", PACKAGE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_function(file: str, name: str, **namespace):
    """One top-level function of the installed reward-bench source, compiled on its own."""
    tree = ast.parse((PACKAGE / file).read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    scope = {"np": pytest.importorskip("numpy"), "math": math, **namespace}
    exec(compile(ast.Module([node], []), str(PACKAGE / file), "exec"), scope)  # their code, run as is
    return scope[name]


OFFICIAL = load_file("constants")
calculate_scores_per_section = official_function("utils.py", "calculate_scores_per_section")


def test_constants_equal_the_packages():
    """Fails on the old table: xstest-should-refuse/respond were 250/154, upstream has 154/250."""
    assert rewardbench.EXAMPLE_COUNTS == OFFICIAL.EXAMPLE_COUNTS
    assert rewardbench.SUBSET_MAPPING == OFFICIAL.SUBSET_MAPPING


def test_sections_and_overall_equal_calculate_scores_per_section():
    rng = random.Random(13)
    outcomes = []
    for subset, section in rewardbench.SECTION_OF.items():
        for i in range(rng.randint(3, 9)):
            a, b = rng.choice([None, *range(11)]), rng.choice([None, *range(11)])
            outcomes.append(Outcome(id=f"{subset}-{i}", subset=f"{section}/{subset}", mode="pairwise", correct=(0,),
                                    scores=(a, b)))
    ours = rewardbench.aggregate(outcomes)
    subset_acc = {k.split("/", 1)[1]: v for k, v in ours.items() if "/" in k}
    theirs = calculate_scores_per_section(OFFICIAL.EXAMPLE_COUNTS, OFFICIAL.SUBSET_MAPPING, subset_acc)
    assert {s: ours[s] for s in OFFICIAL.SUBSET_MAPPING} == pytest.approx(theirs)
    assert ours["overall"] == pytest.approx(sum(theirs.values()) / 4)
    assert section_scores(subset_acc, OFFICIAL.EXAMPLE_COUNTS, OFFICIAL.SUBSET_MAPPING) == pytest.approx(theirs)

