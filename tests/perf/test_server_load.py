"""perf/server_load.py: a short real run of part 1 (both servers, alternating slices) and part 2's inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import ROOT, load_bench_script

SCRIPT = ROOT / "perf" / "server_load.py"


def test_part1_loads_both_servers_in_alternating_slices(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--skip-embedded", "--duration", "2", "--rounds", "2",
                           "--warmup", "0.5", "--clients", "8", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    # the targets are for an idle machine; a loaded CI box may miss them, so only the run itself is checked
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert [set(r) for r in figures["rounds"]] == [{"bare", "cerm"}] * 2
    for role in ("bare", "cerm"):
        run = figures[role]
        assert run["errors"] == 0 and run["requests"] > 0 and run["rps"] > 0, run
        assert 1.5 < run["seconds"] < 10  # two slices of ~1 s each
    assert figures["ratio"] == round(figures["cerm"]["rps"] / figures["bare"]["rps"], 3)
    assert "per slice (req/s): bare" in proc.stdout


def test_part2_requests_spread_evenly_over_the_prompts(shared_data: Path) -> None:
    items = load_bench_script("server_load").embedded_items(2, 16)
    queries = [q for q, _ in items]
    assert len(items) == 16 and len(set(queries)) == 2 and queries.count(queries[0]) == 8
    assert len({r for _, r in items}) == 16  # every response differs: no judgment is reused
