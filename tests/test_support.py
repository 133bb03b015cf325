"""The test support's retry of a vLLM probe: once after a signal, never after an exit code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from support import run_vllm

# dies by SIGABRT while the counter file has fewer than CRASHES lines, then exits with CODE
SCRIPT = """import os, signal, sys
path, crashes, code = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "a") as f:
    f.write("run\\n")
if len(open(path).read().splitlines()) <= crashes:
    os.kill(os.getpid(), signal.SIGABRT)
sys.exit(code)
"""


def _run(tmp_path: Path, crashes: int, code: int, fresh: Path | None = None) -> tuple[int, int]:
    tmp_path.mkdir(exist_ok=True)
    runs = tmp_path / "runs.txt"
    proc = run_vllm([sys.executable, "-c", SCRIPT, str(runs), str(crashes), str(code)], env=dict(os.environ),
                    timeout=60, fresh=fresh)
    return proc.returncode, len(runs.read_text().splitlines())


def test_one_crash_gets_one_more_try_and_the_work_folder_is_emptied(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "partial").write_text("x")
    assert _run(tmp_path, crashes=1, code=0, fresh=work) == (0, 2)
    assert not work.exists()


def test_a_second_crash_fails_and_an_exit_code_is_never_retried(tmp_path: Path) -> None:
    assert _run(tmp_path / "a", crashes=2, code=0) == (-6, 2)
    assert _run(tmp_path / "b", crashes=0, code=1) == (1, 1)
