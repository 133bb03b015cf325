"""The vLLM score readout (greedy walks along the trie, prefix cache on) equals a brute force and HF's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import MODEL_CACHE, run_vllm

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
    cmd = [VLLM_PYTHON, str(PROBE), "--model", str(model), "--out", str(out)]
    proc = run_vllm(cmd, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    d = json.loads(out.read_text())
    # every prefix length mod the 32-token KV block; each way of reading equals the brute force
    runs = d["runs"]
    assert sorted({n % 32 for n in d["prefix_tokens"]}) == list(range(32))
    for name, run in runs.items():
        assert run["errors"] == [None] * len(d["prefix_tokens"]), name
        for got, want in zip(run["probs"], d["brute_force"], strict=False):
            assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-5, name
        for got, want in zip(run["probs"], runs["nodes"]["probs"], strict=True):
            assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-5, name
    assert runs["shipped"]["probs"][0] != runs["shipped"]["probs"][1]
    # a walk per trie path reads most nodes: fewer requests than one per trie node (32 here)
    assert runs["nodes"]["requests_per_prefix"] == 32
    assert runs["shipped"]["requests_per_prefix"] < 32
    d["readout"] = runs["shipped"]["probs"][: d["prefixes"]]
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


def test_vllm_readout_refuses_processed_logprobs() -> None:
    """vLLM's log-probs must be raw (before sampling processors): the walks restrict the tokens a step may pick."""
    from cerm.backends.vllm import VLLMBackend
    from cerm.readout import ReadoutRequest

    backend = VLLMBackend.__new__(VLLMBackend)  # no engine: the check comes before any request
    backend.logprobs_mode = "processed_logprobs"  # what VLLMBackend reads off its engine's model_config
    dists = backend.score_distributions([ReadoutRequest([{"role": "user", "content": "q"}], "\\boxed{")] * 2)
    assert [d.ok for d in dists] == [False, False]
    assert "raw_logprobs" in dists[0].error and "processed_logprobs" in dists[0].error
