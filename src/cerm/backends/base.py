"""The backend seam: chat prompts in, generations out, batched the engine's own way."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from cerm.readout import ReadoutRequest, ReadoutUnsupported, ScoreDistribution
from cerm.types import Generation, Message, SamplingParams

DEFAULT_MODEL = "PKU-ONELab/CE-RM-4B"

OnDone = Callable[[int, Generation], None]
"""Called with (index in the batch, generation) as each generation of a batch finishes."""


@runtime_checkable
class Backend(Protocol):
    """A chat model. One call takes a whole batch; the engine decides how to batch or parallelise it.

    ``generate`` never raises for a single bad request: it returns a ``Generation`` with
    ``finish_reason="error"`` and ``error`` set, so one failure never loses the rest of a batch.
    ``count_tokens`` returns None when the backend cannot count (a remote server).

    A backend whose calls finish one by one (hf per chunk, llamacpp, openai, fake) also takes an optional
    ``on_done(index, generation)`` keyword, called as each one finishes: the judge caches it at once, so a
    kill loses only what was in flight. A backend without it (vLLM: one engine call) is cached per call.

    A ``ScoreReader`` may also take ``read_at`` (``cerm.readout.ReadAt``; hf): it then reads the score
    distribution where ``read_at`` says while the generation's KV cache is alive (``Generation.readout``),
    instead of the judge re-reading prompt + evaluation through ``score_distributions`` afterwards.
    """

    model_id: str
    context_length: int | None

    def generate(self, prompts: list[list[Message]], params: SamplingParams) -> list[Generation]:
        """Generate one ``Generation`` per prompt; a failed request is an error ``Generation``, never a raise."""

    def count_tokens(self, messages: list[Message]) -> int | None:
        """Prompt tokens of ``messages`` under the model's chat template, or None if this backend cannot count."""

    def close(self) -> None:
        """Release the model or connections; the backend is unusable afterwards."""


@runtime_checkable
class ScoreReader(Protocol):
    r"""Optional capability: the 21-value score distribution after a final ``\boxed{`` (cerm/readout.py).

    ``score_distributions`` never raises for one bad request: its ``ScoreDistribution`` carries ``error``.
    """

    def score_distributions(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        """One distribution per request, in order."""
        ...


def score_reader(backend: Backend) -> ScoreReader:
    """``backend`` as a ``ScoreReader``, or a clear error: expected scores never fall back to greedy."""
    reader = getattr(backend, "score_distributions", None)
    if reader is None:
        raise ReadoutUnsupported(
            f"backend {type(backend).__name__} ({backend.model_id}) cannot read the score distribution at the "
            "box; use hf, vllm, llamacpp, or an OpenAI-compatible server that returns prompt log-probs (vLLM).")
    return backend  # type: ignore[return-value]


# name -> "module:Class"; imported lazily so `import cerm` needs no heavy dependency
BACKENDS: dict[str, str] = {
    "hf": "cerm.backends.hf:HFBackend",
    "vllm": "cerm.backends.vllm:VLLMBackend",
    "openai": "cerm.backends.openai:OpenAIBackend",
    "llamacpp": "cerm.backends.llamacpp:LlamaCppBackend",
    "fake": "cerm.backends.fake:FakeBackend",
}

EXTRAS = {"hf": "hf", "vllm": "vllm", "openai": "openai", "llamacpp": "llama", "fake": ""}

# what `cerm backends` shows: the modules a backend imports and how to get them
VLLM_HINT = ("vLLM pins its own transformers, so it lives in a separate venv: bash scripts/setup_vllm_venv.sh "
             "(CPU) or pip install vllm in its own environment (GPU), then pip install --no-deps cerm there")
BACKEND_NEEDS: dict[str, tuple[list[str], str]] = {
    "hf": (["torch", "transformers", "accelerate"], "pip install 'cerm[hf]'"),
    "vllm": (["vllm"], VLLM_HINT),
    "openai": (["httpx"], "nothing extra (a running OpenAI-compatible server)"),
    "llamacpp": (["llama_cpp"], "pip install 'cerm[llama]'"),
    "fake": ([], "nothing (scripted outputs for tests, never real judgments)"),
}


def get_backend(name: str, model: str = DEFAULT_MODEL, **kwargs: Any) -> Backend:
    """Build a backend by name. ``model="embedded"`` selects the packaged SmolLM2 (a plumbing model)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of: {', '.join(sorted(BACKENDS))}.")
    module_name, cls_name = BACKENDS[name].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)(model, **kwargs)


def missing_extra(backend: str, package: str) -> ImportError:
    """The ImportError to raise when ``backend`` needs ``package``, naming the extra to install."""
    if backend == "vllm":
        return ImportError(f"backend 'vllm' needs {package}. {VLLM_HINT}.")
    return ImportError(f"backend {backend!r} needs {package}: pip install 'cerm[{EXTRAS[backend]}]'")
