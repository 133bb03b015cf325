"""The vLLM score readout (trie of 1-token requests, prefix cache on) equals a brute force, and HF's readout."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support import MODEL_CACHE, ROOT

PROBE = Path(__file__).with_name("vllm_readout_probe.py")
VLLM_PYTHON = os.environ.get("CERM_VLLM_PYTHON")


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(not VLLM_PYTHON, reason="set CERM_VLLM_PYTHON to the python of the vLLM venv")
def test_vllm_readout_equals_brute_force_and_hf(tmp_path: Path) -> None:
    from test_vllm import tiny_qwen3_vllm_dir

    model = tiny_qwen3_vllm_dir()
    out = tmp_path / "readout.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1",
               CERM_CACHE_DIR=str(MODEL_CACHE))
    proc = subprocess.run([VLLM_PYTHON, str(PROBE), "--model", str(model), "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    d = json.loads(out.read_text())
    assert d["errors"] == [None, None]
    for got, want in zip(d["readout"], d["brute_force"], strict=True):
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-5
    assert d["readout"][0] != d["readout"][1]
    # the same model in transformers (the main venv) reads the same distribution
    from vllm_readout_probe import CRITERIA, PREFIXES, QUERY, RESPONSE

    from cerm.backends.hf import HFBackend
    from cerm.prompts import evaluation_messages
    from cerm.readout import ReadoutRequest

    messages = evaluation_messages(QUERY, CRITERIA, RESPONSE)
    hf = HFBackend(str(model), dtype="float32")
    for got, want in zip(d["readout"], hf.score_distributions([ReadoutRequest(messages, p) for p in PREFIXES]),
                         strict=True):
        assert max(abs(a - b) for a, b in zip(got, want.probs, strict=True)) < 1e-4
