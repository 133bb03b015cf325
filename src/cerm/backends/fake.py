"""A scripted backend for unit tests and server load tests (like inspect_ai's mockllm).

It returns canned CE-RM text instantly and records every call, so tests can count model calls and check
what the judge sent. Never a default for real runs: its scores are a function of the script.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Sequence

from cerm.backends.base import Capabilities, OnDone
from cerm.parsing import CRITERIA_START
from cerm.readout import GRID, ReadoutRequest, ScoreDistribution
from cerm.types import Generation, Message, SamplingParams

MAX_LOGGED = 2_000  # prompts (and readouts) the fake backend keeps for inspection

Script = Callable[[list[Message], SamplingParams], "str | Generation"]
# a scripted readout: the 21 probabilities (GRID order, any positive scale) or a full ScoreDistribution
Distribution = Callable[[ReadoutRequest], "Sequence[float] | ScoreDistribution"]

CANNED_CRITERIA = (
    "The user wants a correct, useful answer.\n\n"
    f"{CRITERIA_START}\n"
    "1. Correctness: the answer is factually and logically right.\n"
    "2. Helpfulness: the answer addresses what the user asked.\n"
    "3. Clarity: the answer is easy to follow.\n"
    "[End of Criteria]"
)


def canned_evaluation(score: float, criterion_scores: tuple[float, ...] = (4, 3, 5)) -> str:
    """CE-RM-shaped evaluation text: one boxed score per criterion, then the overall ``score``."""
    parts = [f"Criterion {i + 1}: analysis. Score: $\\boxed{{{s:g}}}$" for i, s in enumerate(criterion_scores)]
    return "\n\n".join(parts) + f"\n\nOverall: the response is assessed as a whole. $\\boxed{{{score:g}}}$"


def hash_score(response: str) -> float:
    """A deterministic 0-10 score on the half-point grid, derived from the response text."""
    h = int(hashlib.sha256(response.encode("utf-8")).hexdigest()[:8], 16)
    return (h % 21) / 2


def default_script(messages: list[Message], params: SamplingParams) -> str:
    """The canned criteria for a criteria turn; an evaluation scored by ``hash_score`` of the response."""
    if len(messages) == 1:
        return CANNED_CRITERIA
    response = messages[-1]["content"].split("[Start of Response]\n", 1)[-1].rsplit("\n[End of Response]", 1)[0]
    return canned_evaluation(hash_score(response))


def hash_distribution(request: ReadoutRequest) -> list[float]:
    """A deterministic distribution over the grid, derived from the evaluation text (peaked, never flat)."""
    digest = hashlib.sha256((request.messages[-1]["content"] + request.assistant_prefix).encode("utf-8")).digest()
    return [1.0 + digest[i] for i in range(len(GRID))]


class FakeBackend:
    """Scripted backend. ``script(messages, params)`` returns text or a full ``Generation``;
    ``distribution(request)`` scripts the score readout (``score_distributions``).

    It takes whole batches (the judge's collector feeds it); ``FakeStreamingBackend`` schedules requests
    one by one, as vLLM's async engine and an OpenAI-compatible server do.
    """

    context_length: int | None = None
    capabilities = Capabilities(readout=True, reports_each=True)

    def __init__(self, model: str = "fake", script: Script | None = None,
                 distribution: Distribution | None = None) -> None:
        self.model_id = f"fake:{model}"
        self.script = script or default_script
        self.distribution = distribution or hash_distribution
        # what was sent, newest last; only the last MAX_LOGGED calls are kept (a long-running `cerm serve
        # --backend fake` must not grow without bound), ``num_prompts`` counts them all
        self.calls: list[tuple[list[list[Message]], SamplingParams]] = []
        self.readouts: list[ReadoutRequest] = []
        self._prompts = 0
        self._logged = 0
        self._lock = threading.Lock()

    def score_distributions(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        """The scripted distribution of each request (``distribution``), normalised."""
        with self._lock:
            self.readouts.extend(requests)
        out = []
        for r in requests:
            d = self.distribution(r)
            if not isinstance(d, ScoreDistribution):
                total = sum(d)
                d = ScoreDistribution(tuple(p / total for p in d))
            out.append(d)
        return out

    def generate(self, prompts: list[list[Message]], params: SamplingParams,
                 on_done: OnDone | None = None) -> list[Generation]:
        """The script on every prompt, in order; ``on_done`` as each one is ready."""
        with self._lock:
            self._log(prompts, params)
        out = []
        for i, messages in enumerate(prompts):
            out.append(self._run(messages, params))
            if on_done is not None:
                on_done(i, out[-1])
        return out

    def _run(self, messages: list[Message], params: SamplingParams) -> Generation:
        result = self.script(messages, params)
        if isinstance(result, str):
            result = Generation(text=result, tokens_in=sum(len(m["content"]) for m in messages) // 4,
                                tokens_out=max(1, len(result) // 4))
        return result

    def count_tokens(self, messages: list[Message]) -> int | None:
        """None: the scripted backend has no tokenizer (no context limit applies)."""
        return None

    def close(self) -> None:
        """Nothing to release."""
        pass

    def _log(self, prompts: list[list[Message]], params: SamplingParams) -> None:
        """Under the lock: remember the call; beyond ``MAX_LOGGED`` prompts the oldest calls are dropped."""
        self.calls.append((prompts, params))
        self._prompts += len(prompts)
        self._logged += len(prompts)
        while self._logged > MAX_LOGGED and len(self.calls) > 1:
            self._logged -= len(self.calls.pop(0)[0])
        del self.readouts[:max(0, len(self.readouts) - MAX_LOGGED)]

    @property
    def num_prompts(self) -> int:
        """Total prompts sent so far (= model calls)."""
        return self._prompts


class FakeStreamingBackend(FakeBackend):
    """The scripted backend as an engine with its own scheduler: each prompt is one request.

    ``latency_s(messages, params)`` (default 0) is how long a request takes, awaited without blocking, so
    tests can order completions (a short criteria turn finishing before a long one).
    """

    capabilities = Capabilities(streaming=True, readout=True)

    def __init__(self, model: str = "fake", script: Script | None = None, distribution: Distribution | None = None,
                 latency_s: Callable[[list[Message], SamplingParams], float] | None = None) -> None:
        super().__init__(model, script, distribution)
        self.latency_s = latency_s

    async def agenerate(self, prompts: list[list[Message]], params: SamplingParams) -> list[Generation]:
        """Each prompt as its own request, after its scripted latency."""
        async def one(messages: list[Message]) -> Generation:
            if self.latency_s is not None:
                await asyncio.sleep(self.latency_s(messages, params))
            with self._lock:
                self._log([messages], params)
            return self._run(messages, params)

        return list(await asyncio.gather(*(one(m) for m in prompts)))

    async def ascore_distributions(self, requests: list[ReadoutRequest]) -> list[ScoreDistribution]:
        """``score_distributions``, awaitable."""
        return self.score_distributions(requests)
