"""perf/view_scale.py stays runnable: a small synthetic run through load and site generation (no browser)."""

from __future__ import annotations

import json
import subprocess
import sys

from support import ROOT


def test_view_scale_small_run(tmp_path):
    out = tmp_path / "fig.json"
    r = subprocess.run([sys.executable, str(ROOT / "perf" / "view_scale.py"), "--items", "300", "--no-browser",
                        "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    fig = json.loads(out.read_text())
    assert fig["items"] == 300 and fig["chunks"] == 3 and "PASS  load + site generation" in r.stdout
