"""The backend seam: chat prompts in, generations out, batched the engine's own way."""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

from cerm.readout import ReadoutRequest, ReadoutUnsupported, ScoreDistribution
from cerm.types import Generation, Message, SamplingParams

DEFAULT_MODEL = "PKU-ONELab/CE-RM-4B"


@runtime_checkable
class Backend(Protocol):
    """A chat model. One call takes a whole batch; the engine decides how to batch or parallelise it.

    ``generate`` never raises for a single bad request: it returns a ``Generation`` with
    ``finish_reason="error"`` and ``error`` set, so one failure never loses the rest of a batch.
    ``count_tokens`` returns None when the backend cannot count (a remote server).
    """

    model_id: str
    context_length: int | None

    def generate(self, prompts: list[list[Message]], params: SamplingParams) -> list[Generation]: ...

    def count_tokens(self, messages: list[Message]) -> int | None: ...

    def close(self) -> None: ...


@runtime_checkable
class ScoreReader(Protocol):
    """Optional capability: the 21-value score distribution after a final ``\\boxed{`` (cerm/readout.py).

    ``score_distributions`` never raises for one bad request: its ``ScoreDistribution`` carries ``error``.
    """

    def score_distributions(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]: ...


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


def get_backend(name: str, model: str = DEFAULT_MODEL, **kwargs: Any) -> Backend:
    """Build a backend by name. ``model="embedded"`` selects the packaged SmolLM2 (a plumbing model)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of: {', '.join(sorted(BACKENDS))}.")
    module_name, cls_name = BACKENDS[name].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)(model, **kwargs)


def missing_extra(backend: str, package: str) -> ImportError:
    return ImportError(f"backend {backend!r} needs {package}: pip install 'cerm[{EXTRAS[backend]}]'")
