"""A full disk, for real: `cerm score` writing its output, or its cache, on a small tmpfs (issue 25 item 13).

The run must name the file it could not write and say that the same command resumes (no traceback); after
space is freed (the tmpfs is remounted bigger) the same command finishes with nothing lost. Needs root to
mount the tmpfs (CI runs as root); skipped otherwise, with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CERM = [sys.executable, "-c", "from cerm.cli import main; main()"]
N_ITEMS = 8


@pytest.fixture
def tmpfs(tmp_path):
    """A 96 KiB tmpfs at ``tmp_path / 'small'``; ``resize(size)`` remounts it (freeing space for the rerun)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")

    def resize(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)

    try:
        yield mount, resize
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def score(cwd: Path, output: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([*CERM, "score", "-i", "in.jsonl", "-o", str(output), "--backend", "fake", "--cache",
                           str(cache), "--batch-size", "1"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def write_input(path: Path) -> None:
    # ~30 KB per item (query and responses): a few items fill 96 KiB, whether in the output or the cache
    path.write_text("".join(json.dumps({"id": i, "query": f"question {i} " + "why " * 2500,
                                        "responses": [f"answer {i} " + "because " * 1000, "no"]}) + "\n"
                            for i in range(N_ITEMS)))


def flat(text: str) -> str:
    return " ".join(text.split())


def ids(path: Path) -> list[int]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_a_full_disk_under_the_output_names_it_and_the_rerun_resumes(tmp_path, tmpfs):
    mount, resize = tmpfs
    write_input(tmp_path / "in.jsonl")
    out = mount / "o.jsonl"
    first = score(tmp_path, out, tmp_path / "c.sqlite")
    assert first.returncode == 1, first.stderr
    err = flat(first.stderr)
    assert f"{out}: cannot write (No space left on device)" in err, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    written = out.read_bytes()
    assert 0 < len(written) and written.count(b"\n") < N_ITEMS  # some items, maybe a torn last line
    resize("8m")
    again = score(tmp_path, out, tmp_path / "c.sqlite")
    assert again.returncode == 0, again.stderr
    assert ids(out) == list(range(N_ITEMS))  # the torn line was dropped, nothing lost, nothing twice


def test_a_full_cache_names_it_and_the_rerun_resumes(tmp_path, tmpfs):
    mount, resize = tmpfs
    write_input(tmp_path / "in.jsonl")
    cache = mount / "c.sqlite"
    out = tmp_path / "o.jsonl"
    first = score(tmp_path, out, cache)
    assert first.returncode == 1, first.stderr
    err = flat(first.stderr)
    assert f"{cache}: cannot write (SQLite: database or disk is full)" in err, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    done = ids(out) if out.exists() else []
    assert len(done) < N_ITEMS
    resize("8m")
    again = score(tmp_path, out, cache)
    assert again.returncode == 0, again.stderr
    assert ids(out) == list(range(N_ITEMS))
