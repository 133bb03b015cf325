"""perf/parser_speed.py runs, times every case and passes on small sizes."""

from __future__ import annotations

import subprocess
import sys

from support import ROOT, load_bench_script

ps = load_bench_script("parser_speed")


def test_old_scanner_kept_for_comparison_agrees_with_the_parser():
    from cerm.parsing import find_boxes

    for build in ps.CASES.values():
        text = build(2048)
        assert ps.old_find_boxes(text) == find_boxes(text)


def test_script_runs_small():
    out = subprocess.run([sys.executable, str(ROOT / "perf" / "parser_speed.py"), "--min-kb", "1", "--max-kb", "8",
                          "--old-max-kb", "1", "--repeats", "3"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "growth exponent" in out.stdout and "old/new" in out.stdout and "PASS" in out.stdout
