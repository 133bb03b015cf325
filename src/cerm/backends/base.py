"""The backend seam: chat prompts in, generations out, batched the engine's own way.

What else a backend can do is declared (``Capabilities``); the judge never inspects signatures.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from cerm.readout import ReadoutRequest, ReadoutUnsupported, ScoreDistribution
from cerm.types import Generation, Message, SamplingParams

DEFAULT_MODEL = "PKU-ONELab/CE-RM-4B"

OnDone = Callable[[int, Generation], None]
"""Called with (index in the batch, generation) as each generation of a batch finishes."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend declares it can do; the judge reads this, never the signature of ``generate``.

    Args:
        streaming: it schedules requests itself (vLLM's async engine, an OpenAI-compatible server): it has
            ``async agenerate(prompts, params)``, the judge sends each query's requests the moment they exist,
            and the engine batches them continuously. Without it the judge's collector batches what is ready
            and calls the blocking ``generate`` on a worker thread (hf, llama.cpp, fake).
        readout: it reads the 21-value score distribution at the box (``score_distributions``; with
            ``streaming``, ``ascore_distributions``), needed by ``--score expected`` / ``--close-unfinished``.
        reads_during_generation: ``generate`` takes ``read_at`` (``cerm.readout.ReadAt``) and reads the score
            distribution over the generation's own KV cache (hf).
        reports_each: ``generate`` takes ``on_done(index, generation)`` and calls it as each generation of
            a batch finishes, so a kill loses only what was in flight (hf per chunk, llama.cpp per prompt).
            Without it the judge persists each generation as the call returns.
        counts_tokens: ``count_tokens`` gives the model's own prompt-token count (context-length policy);
            without it the server rejects over-long prompts itself.
    """

    streaming: bool = False
    readout: bool = False
    reads_during_generation: bool = False
    reports_each: bool = False
    counts_tokens: bool = False


@runtime_checkable
class Backend(Protocol):
    """A chat model. One call takes a whole batch; the engine decides how to batch or parallelise it.

    ``generate`` never raises for a single bad request: it returns a ``Generation`` with
    ``finish_reason="error"`` and ``error`` set, so one failure never loses the rest of a batch.
    ``count_tokens`` returns None when the backend cannot count (a remote server).

    What else it can do is declared in a ``capabilities`` attribute (``Capabilities``; none when absent):
    streaming (``agenerate``), the score readout, ``read_at``, ``on_done``, counting tokens.
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
class StreamingBackend(Backend, Protocol):
    """A backend that schedules requests itself (``Capabilities.streaming``); safe to await from any loop."""

    async def agenerate(self, prompts: list[list[Message]], params: SamplingParams) -> list[Generation]:
        """One ``Generation`` per prompt; each prompt is its own engine request."""
        ...


@runtime_checkable
class ScoreReader(Protocol):
    r"""Optional capability: the 21-value score distribution after a final ``\boxed{`` (cerm/readout.py).

    ``score_distributions`` never raises for one bad request: its ``ScoreDistribution`` carries ``error``.
    A streaming backend also has ``async ascore_distributions`` (the same, awaitable from any loop).
    """

    def score_distributions(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        """One distribution per request, in order."""
        ...


def capabilities(backend: Any) -> Capabilities:
    """What ``backend`` declares (``Capabilities()`` when it declares nothing)."""
    caps = getattr(backend, "capabilities", None)
    return caps if isinstance(caps, Capabilities) else Capabilities()


def score_reader(backend: Backend) -> ScoreReader:
    """``backend`` as a ``ScoreReader``, or a clear error: expected scores never fall back to greedy."""
    if not capabilities(backend).readout:
        raise ReadoutUnsupported(
            f"backend {type(backend).__name__} ({backend.model_id}) cannot read the score distribution at the "
            "box; use hf, vllm, llamacpp, or an OpenAI-compatible server that returns prompt log-probs (vLLM).")
    return backend  # type: ignore[return-value]


# name -> "module:Class"; imported lazily so `import cerm` needs no heavy dependency
BACKENDS: dict[str, str] = {
    "hf": "cerm.backends.hf:HFBackend",
    "vllm": "cerm.backends.vllm_async:AsyncVLLMBackend",
    "vllm-offline": "cerm.backends.vllm:VLLMBackend",
    "openai": "cerm.backends.openai:OpenAIBackend",
    "llamacpp": "cerm.backends.llamacpp:LlamaCppBackend",
    "fake": "cerm.backends.fake:FakeBackend",
}

EXTRAS = {"hf": "hf", "vllm": "vllm", "vllm-offline": "vllm", "openai": "openai", "llamacpp": "llama", "fake": ""}

# what `cerm backends` shows: the modules a backend imports and how to get them
VLLM_HINT = ("vLLM pins its own transformers, so it lives in a separate venv: bash scripts/setup_vllm_venv.sh "
             "(CPU) or pip install vllm in its own environment (GPU), then pip install --no-deps cerm there")
BACKEND_NEEDS: dict[str, tuple[list[str], str]] = {
    "hf": (["torch", "transformers", "accelerate"], "pip install 'cerm[hf]'"),
    "vllm": (["vllm"], VLLM_HINT),
    "vllm-offline": (["vllm"], VLLM_HINT),
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
    if backend.startswith("vllm"):
        return ImportError(f"backend 'vllm' needs {package}. {VLLM_HINT}.")
    return ImportError(f"backend {backend!r} needs {package}: pip install 'cerm[{EXTRAS[backend]}]'")
