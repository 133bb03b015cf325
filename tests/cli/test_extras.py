"""Each command with its extra's import blocked: the install hint before any work, never a traceback after it.

The real `cerm` runs in a subprocess whose ``sys.modules`` holds ``None`` for the blocked modules (what an
environment without the extra gives: ``import X`` raises ImportError), so no installed package is touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "bench"


def cerm_without(blocked: list[str], *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = (f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
            "from cerm.cli import main\nmain()")
    env = dict(os.environ, COLUMNS="200", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


FAKE = ("--backend", "fake", "--model", "m")


def test_bench_run_without_matplotlib_writes_everything_but_the_plots(tmp_path):
    p = cerm_without(["matplotlib"], "bench", "run", "-b", "judgebench", "--data-root", FIXTURES, *FAKE,
                     "--bootstrap", "10", "--out", "run", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    warning = [line for line in p.stderr.splitlines() if "matplotlib" in line]
    assert len(warning) == 1 and "pip install 'cerm[bench]'" in warning[0]
    run = tmp_path / "run"
    assert len((run / "items.jsonl").read_text().splitlines()) == 8 and (run / "summary.json").is_file()
    assert "Plots skipped: matplotlib is not installed" in (run / "report.md").read_text()
    assert not (run / "plots").exists()


def test_rewardbench2_without_numpy_fails_before_judging(tmp_path):
    p = cerm_without(["numpy"], "bench", "run", "-b", "rewardbench2", "--data", FIXTURES / "reward-bench-2", *FAKE,
                     "--out", "run", cwd=tmp_path)
    assert p.returncode == 2 and "needs numpy: pip install 'cerm[bench]'" in p.stderr
    assert not (tmp_path / "run" / "items.jsonl").exists()


def test_view_without_jinja2(tmp_path):
    (tmp_path / "s.jsonl").write_text("")
    p = cerm_without(["jinja2"], "view", "s.jsonl", cwd=tmp_path)
    assert p.returncode == 2 and "cerm view needs jinja2: pip install 'cerm[view]'" in p.stderr
    assert not (tmp_path / "s.view").exists()


def test_train_commands_without_their_extra(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("")
    p = cerm_without(["peft"], "train", "sft", "-c", "sft/tiny-cpu.yaml", f"train_data={rows}",
                     f"output_dir={tmp_path / 'sft'}", cwd=tmp_path)
    assert p.returncode == 2 and "cerm train sft needs peft: pip install 'cerm[train]'" in p.stderr, p.stderr
    assert not (tmp_path / "sft").exists()  # nothing converted, nothing written
    p = cerm_without(["trl"], "train", "rl", "-c", "ce-rm-4b-rl.yaml", f"train_data={rows}",
                     f"output_dir={tmp_path / 'rl'}", cwd=tmp_path)
    assert p.returncode == 2 and "cerm train rl needs trl: pip install 'cerm[train]'" in p.stderr, p.stderr
    (tmp_path / "rl").mkdir(exist_ok=True)
    (tmp_path / "rl" / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n")
    p = cerm_without(["matplotlib"], "train", "plot", tmp_path / "rl", cwd=tmp_path)
    assert p.returncode == 2 and "cerm train plot needs matplotlib: pip install 'cerm[train]'" in p.stderr


def test_curate_without_datasketch_fails_and_without_matplotlib_skips_the_histogram(tmp_path):
    rows = [{"prompt": f"Question {i}: " + "xyz"[i % 3] * (i + 4), "chosen": f"yes {i}", "rejected": f"no {i}"}
            for i in range(6)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ("curate", "pairs.jsonl", "-o", "cur", "--pass-k", "0", "--language", "all", "--target-size", "3",
            "--heldout-size", "1")
    p = cerm_without(["datasketch"], *args, cwd=tmp_path)
    assert p.returncode == 2 and "cerm curate needs datasketch: pip install 'cerm[train]'" in p.stderr
    assert not (tmp_path / "cur").exists()
    p = cerm_without(["matplotlib"], *args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "matplotlib is not installed" in p.stderr and (tmp_path / "cur" / "report.json").is_file()
    assert not (tmp_path / "cur" / "pass_rate_hist.png").exists() and "histogram" not in p.stdout


@pytest.mark.parametrize(("blocked", "args", "hint"), [
    (["fastapi"], ("serve", *FAKE), "pip install 'cerm[server]'"),
    (["torch"], ("score", "--backend", "hf", "--model", "m", "--query", "q", "--response", "a"),
     "pip install 'cerm[hf]'"),
])
def test_serve_and_backends_without_their_extra(tmp_path, blocked, args, hint):
    p = cerm_without(blocked, *args, cwd=tmp_path)
    assert p.returncode == 2 and hint in p.stderr, p.stderr
