"""`cerm bench suite` with a real model: the embedded SmolLM2 on the hf backend over the local benchmarks.

It judges at chance (a plumbing model): what is checked is the harness, and the cost estimate printed before
the run against the tokens the run then generated (target: within 25%). The estimate is the calls times
``E[min(budget, L)]`` over the length sample of ``cerm.bench.token_priors``, measured on other items (seed 1,
8 per benchmark) than these (seed 0, 2 per benchmark). Greedy decoding makes the generated tokens a fixed
number for these items on this code, so the comparison is a measurement, not a draw: the bound below is the
target, and the spread it has to absorb is that of this sample of ~30 calls around the prior's mean (about
7% of the total with the prior's per-call spread, for independent calls; calls of one query correlate, so
more). Slow: about 4 minutes on the 2-core VM (4 min 22 s at load average 3; measured: -8.1%).
"""

from __future__ import annotations

import json

import pytest
from support import DATA
from typer.testing import CliRunner

from cerm.backends.embedded import EMBEDDED_WARNING
from cerm.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def test_embedded_suite_estimate_is_within_25_percent_of_the_tokens_generated(tmp_path, shared_data):
    root = tmp_path / "suite"
    args = ["bench", "suite", "--backend", "hf", "--model", "embedded", "-b", "judgebench", "-b", "rm-bench", "-b",
            "rmb", "--data-root", str(DATA), "--limit", "2", "--bootstrap", "0", "--out", str(root)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    suite = json.loads((root / "suite.json").read_text())
    assert suite["token_model"]["basis"].startswith("prior:")  # a fresh root: the measured sample, not the run
    rows = {row["benchmark"]: row for row in suite["rows"]}
    assert {row["status"] for row in rows.values()} == {"done"} and EMBEDDED_WARNING in suite["warnings"]
    lines = []
    expected_total = actual_total = 0.0
    for name, plan in suite["plan"].items():
        expected, bound, actual = plan["tokens_expected"], plan["tokens_bound"], rows[name]["tokens_generated"]
        calls = rows[name]["calls"]
        assert calls == plan["criteria_calls"] + plan["evaluation_calls"]  # the plan's exact call count
        assert actual <= bound
        expected_total += expected
        actual_total += actual
        lines.append(f"{name:<12} calls {calls:>3}  estimated {expected:>7.0f}  generated {actual:>6}  "
                     f"bound {bound:>6}  ({100 * (expected - actual) / actual:+.1f}%)")
    error = (expected_total - actual_total) / actual_total
    lines.append(f"{'total':<12} estimated {expected_total:.0f}, generated {actual_total:.0f}: {100 * error:+.1f}% "
                 "(target: within 25%)")
    report = "\n".join(lines)
    print("\ncost estimate before the run vs tokens generated (embedded SmolLM2, hf):\n" + report)
    assert abs(error) <= 0.25, report
